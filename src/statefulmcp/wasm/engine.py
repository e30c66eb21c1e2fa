"""The shared wasmtime engines and the clock that enforces call deadlines.

One `Engine` per distinct setting (fuel metering on or off) serves every component: engines are
thread-safe, and compiled code is only valid for the engine settings it was compiled with, so
the settings are also part of the compile-cache key.

Deadlines use epoch interruption: a daemon thread bumps every engine's epoch each `TICK_SECONDS`,
and each call arms its store to trap after `ceil(deadline / TICK_SECONDS)` ticks. This costs a
load and a compare per loop back-edge, unlike fuel, and is always on. The ticker belongs to this
module: it starts with the first engine and lives as long as the process, sleeping between ticks.
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
import time

import wasmtime

TICK_SECONDS = 0.01

_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}
_ticker: threading.Thread | None = None


def settings(fuel: bool) -> str:
    """The engine settings that compiled code depends on, as a stable string for cache keys."""
    return f"wasmtime {importlib.metadata.version('wasmtime')}; epoch; fuel={fuel}"


def engine(fuel: bool) -> wasmtime.Engine:
    """The process-wide engine with epoch interruption, and fuel metering when `fuel`."""
    global _ticker
    with _lock:
        found = _engines.get(fuel)
        if found is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            found = _engines[fuel] = wasmtime.Engine(config)
        if _ticker is None:
            _ticker = threading.Thread(target=_tick, name="statefulmcp-wasm-epoch", daemon=True)
            _ticker.start()
        return found


def deadline_ticks(seconds: float) -> int:
    """How many epoch ticks a call may run for before it traps."""
    return max(1, math.ceil(seconds / TICK_SECONDS))


def _tick() -> None:
    while True:
        time.sleep(TICK_SECONDS)
        with _lock:
            engines = list(_engines.values())
        for each in engines:
            each.increment_epoch()
