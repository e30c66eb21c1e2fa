"""One live instance of a WebAssembly component: a Store, its sandbox, and guarded calls.

A `Store` owns the instance's linear memory, so it *is* the instance's in-memory state: the host
keeps one per key for a stateful component, and makes one per call for a stateless one. Stores
are not thread-safe; the host never runs two turns of one instance at once, and different
instances run in parallel on worker threads (wasmtime releases the GIL while wasm runs).

Every call is armed with the component's limits first (epoch deadline, fuel). A trap leaves the
store unusable, so it becomes `InstanceLost`, the signal for the host to drop this instance.

An instance keeps the policy its component had when it was made: grants made at run time
(`grants.py`) reach instances made after them, and a revoke drops the live ones.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from typing import Any

import wasmtime
from wasmtime import component as wc

from statefulmcp.components import InstanceLost
from statefulmcp.wasm import calls, http, traps
from statefulmcp.wasm import engine as engines
from statefulmcp.wasm.grants import Grants
from statefulmcp.wasm.policy import MAX_TABLES, Policy

log = logging.getLogger("statefulmcp.wasm")

_STDERR_TAIL_LINES = 3
# Lines of guest stderr that say nothing about the cause: traceback frames and toolchain hints.
_NOISE = (" ", "\t", "Traceback (most recent call last)", "note: run with")


@dataclass(frozen=True, slots=True)
class Blueprint:
    """Everything needed to make instances of one loaded component."""

    name: str
    component: wc.Component
    linker: wc.Linker
    engine: wasmtime.Engine
    grants: Grants
    stateful: bool
    http: bool
    """Whether the component imports `wasi:http`: its Store then also holds the gate helper."""

    def new_instance(self) -> WasmInstance:
        """A fresh Store with the policy's sandbox and limits, and the component instantiated in it."""
        return WasmInstance(self)


class _Stderr:
    """The guest's stderr: each line goes to the log, the last few are kept for trap messages."""

    def __init__(self, component: str) -> None:
        self.component = component
        self.partial = b""
        self.tail: deque[str] = deque(maxlen=_STDERR_TAIL_LINES)

    def write(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            if line:
                log.info("[%s stderr] %s", self.component, line)
                if not line.startswith(_NOISE):
                    self.tail.append(line)

    def last_words(self) -> str:
        if self.partial.strip():
            self.write(b"\n")
        return " | ".join(self.tail)


class WasmInstance:
    """A component instance in its own Store; the object the host keeps per key."""

    __slots__ = ("_blueprint", "_funcs", "_instance", "_policy", "_running", "_stderr", "_store")

    def __init__(self, blueprint: Blueprint) -> None:
        # Nothing is built here: the host makes instances on its event loop, and instantiating
        # a large component takes a millisecond or more, so that happens in the first call,
        # which runs on a worker thread.
        self._blueprint = blueprint
        self._policy = blueprint.grants.current
        self._running = calls.Running(component=blueprint.name, policy=self._policy)
        self._stderr = _Stderr(blueprint.name)
        self._store: wasmtime.Store | None = None
        self._instance: wc.Instance | None = None
        self._funcs: dict[str, wc.Func] = {}

    def start(self) -> tuple[wasmtime.Store, wc.Instance]:
        """The Store and instance, made on first use; a trap while starting raises `InstanceLost`."""
        if self._store is None or self._instance is None:
            store = _store(self._blueprint, self._policy, self._stderr)
            self._arm(store)
            engines.ticker.enter()
            running = calls.current.set(self._running)
            try:
                if self._blueprint.http:
                    self._running.gate = http.attach(store, self._blueprint.engine)
                self._instance = self._blueprint.linker.instantiate(store, self._blueprint.component)
            except wasmtime.WasmtimeError as exc:
                raise InstanceLost(self._lost_message(exc, starting=True)) from None
            finally:
                calls.current.reset(running)
                engines.ticker.leave()
            self._store = store
        return self._store, self._instance

    def call(self, export: str, index: wc.ExportIndex, args: list[Any]) -> Any:
        """Call an exported function under the component's limits; a trap raises `InstanceLost`."""
        store, instance = self.start()
        func = self._funcs.get(export)
        if func is None:
            func = instance.get_func(store, index)
            assert func is not None, f"{export} is not a function export"
            self._funcs[export] = func
        self._arm(store)
        self._running.refused.clear()
        engines.ticker.enter()
        running = calls.current.set(self._running)
        try:
            return func(store, *args)
        except wasmtime.WasmtimeError as exc:
            log.warning("wasm component %r trapped in %s: %s", self._blueprint.name, export, exc)
            lost = self._lost_message(exc, starting=False)
            raise InstanceLost(calls.told(self._running.refused, lost)) from None
        finally:
            calls.current.reset(running)
            engines.ticker.leave()

    @property
    def refused(self) -> tuple[str, ...]:
        """What the host refused during the last call (see `calls.Running.refused`)."""
        return tuple(self._running.refused)

    def _arm(self, store: wasmtime.Store) -> None:
        limits = self._policy.limits
        store.set_epoch_deadline(engines.deadline_ticks(limits.deadline_seconds))
        if limits.fuel is not None:
            store.set_fuel(limits.fuel)

    def _lost_message(self, exc: wasmtime.WasmtimeError, *, starting: bool) -> str:
        what = traps.cause(exc, self._policy.limits, self._stderr.last_words())
        name = self._blueprint.name
        if starting:
            return f"wasm component {name!r} could not start: it {what}"
        if self._blueprint.stateful:
            return (
                f"wasm component {name!r} {what}. Its in-memory state was lost; "
                "the next call starts a fresh instance."
            )
        return f"wasm component {name!r} {what}."


def _store(blueprint: Blueprint, policy: Policy, stderr: _Stderr) -> wasmtime.Store:
    """A Store that denies everything the policy does not grant."""
    store = wasmtime.Store(blueprint.engine)
    limits = policy.limits
    store.set_limits(
        memory_size=limits.bytes_per_memory,
        # The gate helper's memory (1 MiB at most) is the host's, not the component's.
        memories=limits.memories + (1 if blueprint.http else 0),
        table_elements=limits.table_elements,
        tables=MAX_TABLES,
    )
    wasi = wasmtime.WasiConfig()
    wasi.argv = [blueprint.name]
    wasi.env = [(name, os.environ[name]) for name in policy.env if name in os.environ]
    for grant in policy.dirs:
        wasi.preopen_dir(str(grant.host), grant.guest, fs_mutable=grant.writable)
    wasi.stderr_custom = stderr.write
    store.set_wasi(wasi)
    return store
