"""Streamable HTTP under uvicorn, with `/health`, `/ready` and TCP_NODELAY on every connection."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from statefulmcp.transport.auth import Access
from statefulmcp.transport.events import RETRY_MS, EventBounds, EventLog, make_resumable
from statefulmcp.transport.server import McpFrontend
from statefulmcp.transport.sessions import SessionAdmission

log = logging.getLogger("statefulmcp.http")


@dataclass(slots=True)
class Readiness:
    """What `/ready` reports: ready once start-up work is done, not ready again while draining,
    and not ready while the host cannot serve (`health`: a stalled engine, a lost state file)."""

    ready: bool = False
    draining: bool = False
    health: Callable[[], str | None] = lambda: None
    missing: Callable[[], list[str]] = list
    """Files that did not load (`--serve-what-loads`): the server is ready, but degraded."""
    private: bool = False
    """Whether `/ready` keeps its reason to itself (authentication is on: probes are anonymous)."""


def build_app(
    frontend: McpFrontend, readiness: Readiness, access: Access, limits: HttpLimits | None = None
) -> Starlette:
    """The streamable HTTP app, with `/health` and `/ready` (unauthenticated: probes; they show
    nothing but a status), `access`'s Host/Origin checks and bearer tokens on `/mcp`, and
    resumable streams for 2025-11-25 sessions (`transport/events.py`)."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "alive"})

    async def ready(request: Request) -> JSONResponse:
        if readiness.draining:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        if not readiness.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        reason = readiness.health()
        if reason is not None:
            # The reason (a stalled engine, the state file's path) is for operators: with
            # authentication on it goes to the log, not to anyone who asks.
            body = {"status": "not ready"} if readiness.private else {"status": "not ready", "reason": reason}
            return JSONResponse(body, status_code=503)
        missing = readiness.missing()
        if missing:
            # Still 200: the operator chose to serve what loads, and a file that does not load
            # will not load after a restart either, so taking this replica out of rotation
            # would only stop what does work. The status and the names tell a probe or a human.
            degraded: dict[str, Any] = {"status": "degraded"}
            if not readiness.private:
                degraded["missing"] = missing
            return JSONResponse(degraded)
        return JSONResponse({"status": "ready"})

    limits = limits or HttpLimits()
    app = frontend.server.streamable_http_app(
        transport_security=access.security,
        max_sessions=limits.max_sessions,
        session_idle_timeout=limits.session_idle_timeout,
        retry_interval=RETRY_MS,
        auth=access.auth,
        token_verifier=access.verifier,
        custom_starlette_routes=[Route("/health", health), Route("/ready", ready)],
    )
    make_resumable(frontend.server.session_manager, EventLog(limits.events))
    # Innermost, after authentication: a client is its token when there is one.
    app.user_middleware.append(
        Middleware(
            SessionAdmission,
            max_sessions=limits.max_sessions,
            per_client=limits.max_sessions_per_client,
            idle_timeout=limits.session_idle_timeout,
        )
    )
    # Outermost: a forged Host or Origin is refused (421 / 403) before any token is looked at.
    app.add_middleware(_HostOriginFirst, security=access.security)
    if access.auth is not None:
        readiness.private = True
    return app


class _HostOriginFirst:
    """The SDK's own Host and Origin check, run on `/mcp` before authentication.

    The SDK checks them inside the transport, after its bearer-token middleware has answered
    401, so a request with a forged Host learnt that a token is needed instead of being refused
    for its Host. The check inside stays, as a second line.
    """

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings) -> None:
        self.app = app
        self.check = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") == "/mcp":
            refused = await self.check.validate_request(Request(scope), is_post=False)
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on what one connection may cost before the SDK sees a request (see docs/security.md).

    Without them one request of 40,000 small headers stalled the whole server for half a
    minute, and 1,100 connections trickling header bytes locked every client out.
    """

    max_connections: int = 1000
    header_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    max_sessions: int = 10_000
    """Open 2025-11-25 sessions; beyond this the least recently used idle one is closed for a new
    one, and with none idle the new one gets 503 (see `transport/sessions.py`)."""
    max_sessions_per_client: int = 256
    """Sessions one client (a token, or an address without authentication) may hold open; beyond
    this its own least recently used idle one is closed, and with none idle it gets 429."""
    session_idle_timeout: float = 30 * 60
    """A session with no request for this long is closed; its client gets 404 and starts anew."""
    events: EventBounds = field(default_factory=EventBounds)
    """What the sessions' streams carried, kept for clients that resume a dropped stream."""


class _LimitLog:
    """One warning per kind of refusal every 10 s, with how many there were: a flood of
    refusals must not become a flood of log lines."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def refused(self, kind: str, detail: str) -> None:
        self._counts[kind] = self._counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -60.0) >= 10.0:
            log.warning("refused %d connection(s) in the last 10 s: %s", self._counts[kind], detail)
            self._counts[kind] = 0
            self._last[kind] = now


def _guarded_protocol(base: type[asyncio.Protocol], limits: HttpLimits) -> type[asyncio.Protocol]:
    """`base` with TCP_NODELAY on each accepted socket, and `limits` enforced.

    Without TCP_NODELAY, Nagle's algorithm holds the last small segment of a response until the
    peer's delayed ACK, adding ~40 ms to a request/response exchange.

    The head of each request (request line and headers) is measured as its bytes arrive, before
    the parser sees them: too many bytes or lines get 431, a head not complete within
    `header_timeout` of its first byte gets 408, and a connection beyond `max_connections` gets
    503 at once. A standing SSE stream is not affected: its head completed long ago.
    """
    refusals = _LimitLog()
    status = {
        408: b"408 Request Timeout",
        431: b"431 Request Header Fields Too Large",
        503: b"503 Service Unavailable",
    }

    class Guarded(base):  # type: ignore[misc, valid-type]
        _in_head = True
        _head_bytes = 0
        _head_lines = 0
        _tail = b""
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    log.warning("could not set TCP_NODELAY: %s", exc)
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                refusals.refused(
                    "connections", f"{limits.max_connections} connections are open (--max-connections)"
                )
                self._refuse(503, "too many connections; retry later")
                return
            self._arm()

        def _arm(self) -> None:
            if self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(limits.header_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _too_slow(self) -> None:
            self._timer = None
            if self._in_head and not self._discarding and not self.transport.is_closing():
                refusals.refused(
                    "slow",
                    f"request headers not complete within {limits.header_timeout:g} s (--header-timeout)",
                )
                self._refuse(408, "request headers took too long")

        _discarding = False

        def _refuse(self, code: int, reason: str) -> None:
            """Answer `code` and end the connection. What the client is still sending is read and
            dropped for a moment first: closing with unread input makes the kernel send a reset,
            and the client would see "connection reset" instead of the answer."""
            body = reason.encode()
            self.transport.write(
                b"HTTP/1.1 " + status[code] + b"\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
            )
            self._disarm()
            self._discarding = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, self.transport.close)

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return
            if self._in_head:
                self._arm()
                window = self._tail + data
                end = window.find(b"\r\n\r\n")
                head = data if end < 0 else data[: max(0, end + 4 - len(self._tail))]
                self._head_bytes += len(head)
                self._head_lines += head.count(b"\n")
                if self._head_bytes > limits.max_header_bytes or self._head_lines > limits.max_headers + 1:
                    refusals.refused(
                        "headers",
                        f"request headers over {limits.max_headers} fields or {limits.max_header_bytes} bytes",
                    )
                    self._refuse(431, "request headers too large")
                    return
                if end < 0:
                    self._tail = window[-3:]
                else:
                    self._in_head = False
                    self._head_bytes = self._head_lines = 0
                    self._tail = b""
                    self._disarm()
            super().data_received(data)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True  # the next request's head; timed from its first byte

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return Guarded


def http_protocol(limits: HttpLimits | None = None) -> type[asyncio.Protocol]:
    """uvicorn's fastest available HTTP protocol, with TCP_NODELAY and `limits` on every connection."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        return _guarded_protocol(HttpToolsProtocol, limits or HttpLimits())
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return _guarded_protocol(H11Protocol, limits or HttpLimits())


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
        self._drained = asyncio.Event()

    async def main_loop(self) -> None:
        """uvicorn's loop, woken the moment the drain ends rather than at its next 0.1 s tick."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), 0.1)

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
            self._drained.set()


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


def http_server(
    app: Starlette, *, log_level: str, on_stop: Callable[[], Awaitable[None]], limits: HttpLimits
) -> _Server:
    """uvicorn for `app`, draining through `on_stop` before it stops listening."""
    config = uvicorn.Config(
        app,
        http=http_protocol(limits),
        log_level=log_level.lower(),
        access_log=False,
        log_config=None,
        lifespan="on",
        # In-flight calls already had the drain timeout (on_stop); what is left to close are idle
        # keep-alive connections and clients' standing SSE streams, which would never close alone.
        timeout_graceful_shutdown=1,
    )
    return _Server(config, on_stop)
