"""Compiling components, once: native code shared in memory and cached on disk, by content hash
and engine settings.

In memory: one `Component` per key (the SHA-256 of the engine settings and the component bytes)
for as long as anything loaded holds it, so loading the same file again, under another name or
after a reload, costs nothing (a componentize-py component's code is about 36 MiB; before, each
load deserialized its own copy). The table holds its components weakly: once every component
made from it is unloaded, its code is freed, and nothing grows with the number of loads.

On disk: a componentize-py component takes seconds to compile and milliseconds to deserialize,
so a restart should never recompile. Entries live in `$STATEFULMCP_CACHE_DIR/wasm` (default
`~/.cache/statefulmcp/wasm`), named by the same key. Deserializing trusts the bytes to be
wasmtime's own output, so each entry carries a digest of itself, checked before use: a
truncated or corrupted entry is recompiled, never run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import wasmtime
from wasmtime import component as wc

from statefulmcp.wasm import engine as engines

log = logging.getLogger("statefulmcp.wasm")

_DIGEST = hashlib.sha256().digest_size


def cache_dir() -> Path:
    """Where compiled components are kept."""
    root = os.environ.get("STATEFULMCP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "statefulmcp") / "wasm"


@dataclass(slots=True)
class Counts:
    """How components were obtained in this process (for tests and benchmarks)."""

    compiled: int = 0
    deserialized: int = 0
    shared: int = 0
    """Loads served by a component already in memory."""


counts = Counts()


class _Shared:
    """One `Component` per key while something holds it; a key is built once even when asked
    for by several threads at the same time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: weakref.WeakValueDictionary[str, wc.Component] = weakref.WeakValueDictionary()
        self._building: dict[str, threading.Lock] = {}

    def get(self, key: str, build: Callable[[], wc.Component]) -> wc.Component:
        with self._lock:
            found = self._live.get(key)
            if found is not None:
                counts.shared += 1
                return found
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._lock:
                found = self._live.get(key)
                if found is not None:
                    counts.shared += 1
                    return found
            try:
                component = build()
            except BaseException:
                with self._lock:
                    self._building.pop(key, None)
                raise
            with self._lock:
                self._live[key] = component
                self._building.pop(key, None)
            return component


_shared = _Shared()


def compile_component(source: bytes, *, fuel: bool) -> wc.Component:
    """The component for `source` (binary or WAT text): the one in memory when a load holds it,
    else from the disk cache, else compiled (and cached).

    Raises `wasmtime.WasmtimeError` when `source` is not a valid component.
    """
    path = entry_path(source, fuel=fuel)
    return _shared.get(path.stem, lambda: _build(path, source, fuel))


def entry_path(source: bytes, *, fuel: bool) -> Path:
    """Where the compiled `source` is cached; its stem is the key."""
    key = hashlib.sha256(engines.settings(fuel).encode() + b"\0" + source).hexdigest()
    return cache_dir() / f"{key}.cwasm"


def _build(path: Path, source: bytes, fuel: bool) -> wc.Component:
    eng = engines.engine(fuel)
    with _entry_lock(path):  # a process that compiles it first has written it once we hold this
        cached = _read(eng, path)
        if cached is not None:
            counts.deserialized += 1
            return cached
        component = wc.Component(eng, source)
        counts.compiled += 1
        _write(path, bytes(component.serialize()))
        return component


@contextlib.contextmanager
def _entry_lock(path: Path) -> Iterator[None]:
    """Held by one process at a time per entry, to read it or else compile and write it: replicas
    started together on one machine with a cold cache compile each component once (seconds of
    every core each) rather than once each. Without a writable cache directory there is nothing
    to share, and no lock."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(f"{path.name}.lock").open("a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(eng: wasmtime.Engine, path: Path) -> wc.Component | None:
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    digest, body = blob[:_DIGEST], blob[_DIGEST:]
    if len(digest) == _DIGEST and hashlib.sha256(body).digest() == digest:
        try:
            return wc.Component.deserialize(eng, body)
        except wasmtime.WasmtimeError as exc:
            log.warning("recompiling: cached %s is unusable: %s", path, exc)
    else:
        log.warning("recompiling: cached %s is corrupt", path)
    return None


def _write(path: Path, body: bytes) -> None:
    """Store an entry atomically; a cache that cannot be written only costs a recompile."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(hashlib.sha256(body).digest() + body)
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the compiled component in %s: %s", path.parent, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
