"""The shared wasmtime engines and the clock that enforces call deadlines.

One `Engine` per distinct setting (fuel metering on or off) serves every component: engines are
thread-safe, and compiled code is only valid for the engine settings it was compiled with, so
the settings are also part of the compile-cache key.

Deadlines use epoch interruption: a ticker thread bumps every engine's epoch each `TICK_SECONDS`,
and each call arms its store to trap after `ceil(deadline / TICK_SECONDS)` ticks. This costs a
load and a compare per loop back-edge, unlike fuel, and is always on. The ticker only runs while
some wasm call does (`enter()`/`leave()` bracket each call) and for `LINGER_SECONDS` after the
last one, then ends: an idle server with wasm components loaded never wakes for it, and nothing
of it remains once calls stop (epochs that do not advance cannot trap anyone).
"""

from __future__ import annotations

import importlib.metadata
import math
import threading
import time

import wasmtime

TICK_SECONDS = 0.01
LINGER_SECONDS = 1.0
"""How long the ticker stays after the last call, so a stream of calls does not restart it each time."""

_lock = threading.Lock()
_engines: dict[bool, wasmtime.Engine] = {}


def settings(fuel: bool) -> str:
    """The engine settings that compiled code depends on, as a stable string for cache keys."""
    return f"wasmtime {importlib.metadata.version('wasmtime')}; epoch; fuel={fuel}"


def engine(fuel: bool) -> wasmtime.Engine:
    """The process-wide engine with epoch interruption, and fuel metering when `fuel`."""
    with _lock:
        found = _engines.get(fuel)
        if found is None:
            config = wasmtime.Config()
            config.epoch_interruption = True
            config.consume_fuel = fuel
            found = _engines[fuel] = wasmtime.Engine(config)
        return found


def deadline_ticks(seconds: float) -> int:
    """How many epoch ticks a call may run for before it traps."""
    return max(1, math.ceil(seconds / TICK_SECONDS))


class _Ticker:
    """Advances the engines' epochs while calls run, and ends `LINGER_SECONDS` after the last one.

    `enter()` / `leave()` bracket each call: a lock and a counter on the hot path. The thread
    is started by the first call after it ended, and checks the counter at each tick, so a call
    never has to wake it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls = 0
        self._last = 0.0
        self._thread: threading.Thread | None = None
        self.ticks = 0

    def enter(self) -> None:
        with self._lock:
            self._calls += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="statefulmcp-wasm-epoch", daemon=True)
                self._thread.start()

    def leave(self) -> None:
        with self._lock:
            self._calls -= 1
            self._last = time.monotonic()

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            self.ticks += 1
            with _lock:
                engines = list(_engines.values())
            for each in engines:
                each.increment_epoch()
            with self._lock:
                if not self._calls and time.monotonic() - self._last > LINGER_SECONDS:
                    self._thread = None
                    return


ticker = _Ticker()
