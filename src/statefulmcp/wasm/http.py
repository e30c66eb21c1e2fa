"""`wasi:http` outgoing requests, linked through wasmtime's own implementation, checked per host.

Components that import `wasi:http` (every default componentize-js build does, even with HTTP
unused) get wasmtime's `wasi:http/types` and `outgoing-handler`, with `handle` replaced by the
host's. wasmtime's C API has no hook to inspect or refuse a request, and Python cannot read
wasmtime's request resources, so the host's `handle` reads and rewrites the request through a
small helper component instantiated in the guest's own Store (`http_gate.wat`):

1. it reads the request's scheme, authority and path, and checks them against the calling
   instance's `[network]` policy, resolving a granted name once and checking every address
   (`network.check`); a refusal is the request's error, `internal-error` with a message naming
   the host and what to grant, and a log line;
2. it registers the checked target with the gate (`gate.py`) and rewrites the request to the
   gate's loopback address and one-shot path;
3. it passes the request to wasmtime's real `handle`, which sends it to the gate, which sends it
   on to a checked address, within the policy's time and size bounds.

So no request leaves unchecked: wasmtime only ever connects to the gate. A host `handle` is only
the one guests get when it replaces wasmtime's under the exact name wasmtime registers (a guest
importing 0.2.3 is linked to wasmtime's 0.2.12 even when 0.2.3 is defined as well), so `link`
sends a probe request through the linker it built, and refuses to link `wasi:http` at all if the
probe does not reach the host's `handle`: never unchecked network, silently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import component as wc

from statefulmcp._errors import ComponentError, NetworkDenied
from statefulmcp.wasm import calls, network
from statefulmcp.wasm.gate import gate
from statefulmcp.wasm.policy import Policy

log = logging.getLogger("statefulmcp.wasm")

WASI_HTTP_VERSION = "0.2.12"
"""The version wasmtime 50 registers `wasi:http` under: the only name a host `handle` replaces."""

_HANDLER = f"wasi:http/outgoing-handler@{WASI_HTTP_VERSION}"
_SCHEMES = {"HTTP": "http", "HTTPS": "https"}
_PROBE_ERROR = "statefulmcp probe"

_lock = threading.Lock()
_gates: dict[int, tuple[wasmtime.Engine, wc.Component, wc.Linker]] = {}


def imports_http(imports: Iterable[str]) -> bool:
    return any(name.startswith("wasi:http/") for name in imports)


def _gate_parts(engine: wasmtime.Engine) -> tuple[wc.Component, wc.Linker]:
    """The gate helper compiled for `engine`, and a linker with wasmtime's `wasi:http` untouched."""
    with _lock:
        found = _gates.get(id(engine))
        if found is None:
            text = resources.files("statefulmcp.wasm").joinpath("http_gate.wat").read_text()
            plain = wc.Linker(engine)
            plain.add_wasip2()
            plain.add_wasi_http()
            found = _gates[id(engine)] = (engine, wc.Component(engine, text), plain)
        return found[1], found[2]


def attach(store: wasmtime.Store, engine: wasmtime.Engine) -> wc.Instance:
    """The gate helper instantiated in `store`, where it can reach the guest's requests."""
    component, plain = _gate_parts(engine)
    store.set_wasi_http()
    return plain.instantiate(store, component)


def link(linker: wc.Linker, engine: wasmtime.Engine, path: Path) -> None:
    """wasmtime's `wasi:http` with the host's `handle`, checked by a probe before any guest runs."""
    linker.add_wasi_http()
    linker.allow_shadowing = True
    with linker.root() as root, root.add_instance(_HANDLER) as handler:
        handler.add_func("handle", _handle)
    linker.allow_shadowing = False
    _probe(linker, engine, path)


def _probe(linker: wc.Linker, engine: wasmtime.Engine, path: Path) -> None:
    component, _ = _gate_parts(engine)
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    store.set_wasi_http()
    store.set_epoch_deadline(1_000_000)
    with contextlib.suppress(wasmtime.WasmtimeError):  # an engine without fuel metering
        store.set_fuel(1_000_000)
    running = calls.Running(component="(probe)", policy=Policy())
    token = calls.current.set(running)
    try:
        probe = linker.instantiate(store, component)
        func = probe.get_func(store, "probe")
        assert func is not None
        func(store)
    except wasmtime.WasmtimeError as exc:
        raise ComponentError(f"{path}: cannot link wasi:http: its self-test failed: {exc}") from None
    finally:
        calls.current.reset(token)
    if not running.probed:
        raise ComponentError(
            f"{path}: this wasmtime does not register wasi:http as version {WASI_HTTP_VERSION}, so the "
            "host cannot check this component's requests; it was not loaded rather than given unchecked "
            "network. Update statefulmcp.wasm.http.WASI_HTTP_VERSION for this wasmtime"
        )


def _call(running: calls.Running, store: Any, name: str, *args: Any) -> Any:
    func = running.funcs.get(name)
    if func is None:
        assert running.gate is not None
        func = running.funcs[name] = running.gate.get_func(store, name)
        assert func is not None, f"the gate helper has no {name}"
    return func(store, *args)


def _handle(store: Any, request: wc.ResourceAny, options: wc.ResourceAny | None) -> Any:
    """`wasi:http/outgoing-handler.handle`: check, rewrite to the gate, send with wasmtime's own."""
    running = calls.current.get()
    if running.gate is None:  # the probe: `link` checks that it got here
        running.probed = True
        request.drop(store)
        return wc.Variant("internal-error", _PROBE_ERROR)
    try:
        target = _check(running, store, request)
        authority, prefix = gate.register(target)
    except NetworkDenied as exc:
        log.warning("wasm component %r: %s", running.component, exc)
        running.refuse(str(exc))
        request.drop(store)
        if options is not None:
            options.drop(store)
        return wc.Variant("internal-error", str(exc))
    path = _call(running, store, "path-with-query", request) or "/"
    for setter, value in (
        ("set-scheme", wc.Variant("HTTP")),
        ("set-authority", authority),
        ("set-path-with-query", prefix + (path if path.startswith("/") else "/" + path)),
    ):
        outcome = _call(running, store, setter, request, value)
        assert outcome.tag == "ok", f"{setter} refused a value the host made"
    return _call(running, store, "handle", request, options)


def _check(running: calls.Running, store: Any, request: wc.ResourceAny) -> network.Target:
    scheme = _call(running, store, "scheme", request)
    name = "http" if scheme is None else _SCHEMES.get(scheme.tag, str(scheme.payload))
    authority = _call(running, store, "authority", request) or ""
    return network.check(running.component, running.policy.network, name, authority)
