"""Streamable HTTP under uvicorn, with `/health`, `/ready` and TCP_NODELAY on every connection."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from statefulmcp.transport.auth import Access
from statefulmcp.transport.server import McpFrontend

log = logging.getLogger("statefulmcp.http")


@dataclass(slots=True)
class Readiness:
    """What `/ready` reports: ready once start-up work is done, not ready again while draining,
    and not ready while the host cannot serve (`health`: a stalled engine, a lost state file)."""

    ready: bool = False
    draining: bool = False
    health: Callable[[], str | None] = lambda: None


def build_app(frontend: McpFrontend, readiness: Readiness, access: Access) -> Starlette:
    """The streamable HTTP app, with `/health` and `/ready` (unauthenticated: probes; they show
    nothing but a status), and `access`'s Host/Origin checks and bearer tokens on `/mcp`."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def ready(request: Request) -> JSONResponse:
        if readiness.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not readiness.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        reason = readiness.health()
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready"})

    return frontend.server.streamable_http_app(
        transport_security=access.security,
        auth=access.auth,
        token_verifier=access.verifier,
        custom_starlette_routes=[Route("/health", health), Route("/ready", ready)],
    )


def _nodelay_protocol(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """`base` with TCP_NODELAY set on each accepted socket.

    Without it, Nagle's algorithm holds the last small segment of a response until the peer's
    delayed ACK, adding ~40 ms to a request/response exchange.
    """

    class NoDelay(base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    log.warning("could not set TCP_NODELAY: %s", exc)
            super().connection_made(transport)

    return NoDelay


def nodelay_http_protocol() -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol, with TCP_NODELAY on every connection."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return _nodelay_protocol(HttpToolsProtocol)
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return _nodelay_protocol(H11Protocol)


class _Server(uvicorn.Server):
    """uvicorn, with a drain step before it stops listening.

    On the first SIGTERM/SIGINT, `on_stop` runs first (refuse new calls, let in-flight ones
    finish) while the server still answers, so callers get a clear "shutting down" error or a 503
    instead of a refused connection; then uvicorn shuts down as usual. A second SIGINT exits at
    once.
    """

    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self._stopping: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self._stopping is not None:
            if sig == signal.SIGINT:
                log.warning("second SIGINT: exiting at once")
                os._exit(130)
            return
        log.info("received %s: draining, then shutting down", signal.Signals(sig).name)
        self._stopping = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self._on_stop()
        finally:
            self.should_exit = True


class AddressInUse(Exception):
    """The address to listen on is taken; the message names it."""


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, bound before anything else starts.

    Binding first turns "address in use" into one clear start-up error instead of a failure
    deep inside uvicorn after the server said it was serving.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUse(
                f"{shown}:{port} is in use; stop the other server or pick another --http port"
            ) from None
        raise AddressInUse(f"cannot listen on {shown}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def url_of(sock: socket.socket) -> str:
    bound: Any = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    return f"http://{shown}:{bound[1]}/mcp"


def http_server(app: Starlette, *, log_level: str, on_stop: Callable[[], Awaitable[None]]) -> _Server:
    """uvicorn for `app`, draining through `on_stop` before it stops listening."""
    config = uvicorn.Config(
        app,
        http=nodelay_http_protocol(),
        log_level=log_level.lower(),
        access_log=False,
        log_config=None,
        lifespan="on",
        # In-flight calls already had the drain timeout (on_stop); what is left to close are idle
        # keep-alive connections and clients' standing SSE streams, which would never close alone.
        timeout_graceful_shutdown=1,
    )
    return _Server(config, on_stop)
