"""Compiling components, once: native code cached on disk by content hash and engine settings.

A componentize-py component takes seconds to compile and milliseconds to deserialize, so a
restart should never recompile. Entries live in `$STATEFULMCP_CACHE_DIR/wasm` (default
`~/.cache/statefulmcp/wasm`), named by the SHA-256 of the component bytes and of the engine
settings. Deserializing trusts the bytes to be wasmtime's own output, so each entry carries a
digest of itself, checked before use: a truncated or corrupted entry is recompiled, never run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
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


def compile_component(source: bytes, *, fuel: bool) -> wc.Component:
    """The component for `source` (binary or WAT text), from the cache when it is there.

    Raises `wasmtime.WasmtimeError` when `source` is not a valid component.
    """
    eng = engines.engine(fuel)
    key = hashlib.sha256(engines.settings(fuel).encode() + b"\0" + source).hexdigest()
    path = cache_dir() / f"{key}.cwasm"
    cached = _read(eng, path)
    if cached is not None:
        return cached
    component = wc.Component(eng, source)
    _write(path, bytes(component.serialize()))
    return component


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
