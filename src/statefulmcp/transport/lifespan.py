"""The server's one life cycle, the same for HTTP and stdio.

open the host -> load every path as one batch -> listen -> eager activation -> ready ->
(SIGTERM/SIGINT) -> not ready -> drain (calls still running at the timeout answer "shutting
down") -> close.

Start-up failures are one line, `cannot start: ...`, and exit code 2, never a traceback. The
drain timeout is a hard bound: the process is gone at most `drain_timeout + SHUTDOWN_GRACE`
seconds after the signal. If closing is not done by then (a hook or a sync body that never
returns), it logs what it abandons and exits with `EXIT_FORCED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from statefulmcp._errors import ActivationError, ComponentError, StoreError
from statefulmcp.cluster import DEFAULT_LEASE_SECONDS
from statefulmcp.host import DEFAULT_IDLE_SECONDS, DEFAULT_MAX_INSTANCES, DEFAULT_MAX_WAITERS, Host
from statefulmcp.per_session import STDIO_SESSION
from statefulmcp.state import Sync, is_postgres, store_path
from statefulmcp.transport.auth import ADMIN_SCOPE, AuthConfigError, build_access
from statefulmcp.transport.events import EventBounds
from statefulmcp.transport.http import (
    AddressInUse,
    HttpLimits,
    Readiness,
    bind,
    build_app,
    http_server,
    url_of,
)
from statefulmcp.transport.questions import ANSWER_TIMEOUT, MAX_QUESTIONS
from statefulmcp.transport.server import McpFrontend
from statefulmcp.transport.stdio import checked_stdio

log = logging.getLogger("statefulmcp")

SHUTDOWN_GRACE = 5.0
"""Seconds beyond the drain timeout for closing: open connections, `on_deactivate` hooks, the store."""

EXIT_FORCED = 4
"""The exit code when shutdown had to abandon work (a hook or sync body that never returned).

Distinct from 1, which is what Python exits with on any uncaught exception, so a supervisor can
tell a bounded but incomplete shutdown from a crash."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What `statefulmcp serve` was asked to do."""

    paths: list[Path]
    http: tuple[str, int] = ("127.0.0.1", 8000)
    stdio: bool = False
    allow_load: Path | None = None
    serve_what_loads: bool = False
    state: str | None = None
    durability: Sync = "os"
    drain_timeout: float = 10.0
    max_call_seconds: float | None = 300.0
    log_level: str = "INFO"
    advertise: str | None = None
    allowed_hosts: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    auth_token_file: Path | None = None
    auth_verifier: str | None = None
    auth_issuer: str | None = None
    max_connections: int = HttpLimits().max_connections
    header_timeout: float = HttpLimits().header_timeout
    max_sessions: int = HttpLimits().max_sessions
    max_sessions_per_client: int = HttpLimits().max_sessions_per_client
    session_idle_timeout: float = HttpLimits().session_idle_timeout
    events: EventBounds = field(default_factory=EventBounds)
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    audit_commits: bool = False
    idle_seconds: float | None = DEFAULT_IDLE_SECONDS
    max_instances: int | None = DEFAULT_MAX_INSTANCES
    max_waiters: int | None = DEFAULT_MAX_WAITERS
    answer_timeout: float = ANSWER_TIMEOUT
    max_questions: int = MAX_QUESTIONS


_STOPPED = "the server is shutting down, so the question to the client was withdrawn; call the tool again after it restarts"


class _CannotStart(Exception):
    """Start-up failed; the message is the one line to log."""


async def serve(options: ServeOptions) -> int:
    """Serve until a signal; returns the exit code."""
    try:
        host = Host(
            state=options.state if is_postgres(options.state) else store_path(options.state),
            sync=options.durability,
            max_call_seconds=options.max_call_seconds,
            advertise=options.advertise,
            lease_seconds=options.lease_seconds,
            audit_commits=options.audit_commits,
            idle_seconds=options.idle_seconds,
            max_instances=options.max_instances,
            max_waiters=options.max_waiters,
        )
        host.start()
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 2
    bound = _ShutdownBound(options.drain_timeout)
    try:
        if options.serve_what_loads:
            await host.load_what_loads(options.paths)
        else:
            await host.load_all(options.paths)
        frontend = McpFrontend(
            host,
            allow_load=options.allow_load,
            answer_timeout=options.answer_timeout,
            max_questions=options.max_questions,
        )
        try:
            if options.stdio:
                await _serve_stdio(host, frontend, options, bound)
            else:
                await _serve_http(host, frontend, options, bound)
        finally:
            await frontend.aclose()
    except (_CannotStart, ComponentError, ActivationError) as exc:
        log.error("cannot start: %s", exc)
        await _close(host, bound)
        return 2
    await _close(host, bound)
    log.info("stopped cleanly")
    return 0


async def _close(host: Host, bound: _ShutdownBound) -> None:
    bound.arm()
    await host.aclose()


class _ShutdownBound:
    """The hard bound on shutdown: armed once, at the signal (or when closing starts without
    one), it exits the process `drain_timeout + SHUTDOWN_GRACE` seconds later, whatever still runs.

    Measured from the signal, so an operator can set `--drain-timeout` below a supervisor's
    kill deadline (Kubernetes' grace period, systemd's TimeoutStopSec) and know it holds.
    """

    def __init__(self, drain_timeout: float) -> None:
        self._drain_timeout = drain_timeout
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        if self._timer is not None:
            return
        self._timer = threading.Timer(self._drain_timeout + SHUTDOWN_GRACE, self._force)
        self._timer.daemon = True
        self._timer.name = "statefulmcp-shutdown-bound"
        self._timer.start()

    def _force(self) -> None:
        stuck = [
            t.name
            for t in threading.enumerate()
            if t.name.startswith("statefulmcp-") and t is not threading.current_thread()
        ]
        log.error(
            "shutdown did not finish within %g s of the signal (drain timeout %g s + %g s to close); "
            "exiting with code %d, abandoning: %s",
            self._drain_timeout + SHUTDOWN_GRACE,
            self._drain_timeout,
            SHUTDOWN_GRACE,
            EXIT_FORCED,
            ", ".join(stuck) or "nothing named",
        )
        _exit(EXIT_FORCED)


def _exit(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def finish(code: int) -> None:
    """Leave the process with `code`, without waiting for worker threads still stuck in user code.

    Python joins worker threads at exit, so a sync body that never returns would keep a stopped
    server alive forever.
    """
    if any(t.name.startswith("statefulmcp-sync") and t.is_alive() for t in threading.enumerate()):
        _exit(code)
    raise SystemExit(code)


async def _activate(host: Host, readiness: Readiness | None = None) -> None:
    activated = await host.activate_eager()
    if activated:
        log.info("eagerly activated %d instances", activated)
    if readiness is not None:
        readiness.ready = True


async def _serve_http(
    host: Host, frontend: McpFrontend, options: ServeOptions, bound: _ShutdownBound
) -> None:
    bind_host, port = options.http
    try:
        sock = bind(bind_host, port)
    except AddressInUse as exc:
        raise _CannotStart(str(exc)) from None
    try:
        access = build_access(
            bind_host=bind_host,
            port=sock.getsockname()[1],
            advertise=options.advertise,
            hosts=options.allowed_hosts,
            origins=options.allowed_origins,
            token_file=options.auth_token_file,
            verifier_ref=options.auth_verifier,
            issuer=options.auth_issuer,
        )
    except AuthConfigError as exc:
        sock.close()
        raise _CannotStart(str(exc)) from None
    if access.verifier is not None:
        frontend.admin_scope = ADMIN_SCOPE
    if host.cluster is not None:
        try:
            await host.cluster.set_address(options.advertise or _replica_url(bind_host, sock))
        except ValueError as exc:
            sock.close()
            raise _CannotStart(str(exc)) from None
    readiness = Readiness(
        health=host.health, missing=lambda: [Path(failure.source).name for failure in host.failed()]
    )
    limits = HttpLimits(
        max_connections=options.max_connections,
        header_timeout=options.header_timeout,
        max_sessions=options.max_sessions,
        max_sessions_per_client=options.max_sessions_per_client,
        session_idle_timeout=options.session_idle_timeout,
        events=options.events,
    )
    app = build_app(frontend, readiness, access, limits)

    async def stopping() -> None:
        bound.arm()
        readiness.draining = True
        frontend.questions.stop(_STOPPED)
        await host.drain(options.drain_timeout)

    server = http_server(app, log_level=options.log_level, on_stop=stopping, limits=limits)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("serving on %s", url_of(sock))
    try:
        await _activate(host, readiness)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        raise
    await serving


def _replica_url(bind_host: str, sock: socket.socket) -> str:
    """Where the other replicas reach this one when `--advertise` does not say."""
    if bind_host in ("0.0.0.0", "::", ""):
        raise ValueError(
            f"--http {bind_host}: replicas forward calls to each other, and a wildcard address is not "
            "one they can reach; pass --advertise http://THIS-HOST:PORT/mcp"
        )
    return url_of(sock)


async def _serve_stdio(
    host: Host, frontend: McpFrontend, options: ServeOptions, bound: _ShutdownBound
) -> None:
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() and sig is signal.SIGINT:
            log.warning("second SIGINT: exiting at once")
            _exit(130)
        log.info("received %s: draining, then shutting down", sig.name)
        bound.arm()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    await _activate(host)
    if stop.is_set():
        return
    frontend.trusted = True
    frontend.default_session = STDIO_SESSION
    async with checked_stdio() as channel:
        serving = asyncio.create_task(
            frontend.server.run(channel.read, channel.write, frontend.server.create_initialization_options())
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            frontend.questions.stop(_STOPPED)
            await host.drain(options.drain_timeout)
            await channel.finish(SHUTDOWN_GRACE)
            await asyncio.wait({serving}, timeout=SHUTDOWN_GRACE)
        serving.cancel()
        stopping.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)
