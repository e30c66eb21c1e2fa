"""The server's one life cycle, the same for HTTP and stdio.

open the host -> load every path as one batch -> listen -> eager activation -> ready ->
(SIGTERM/SIGINT) -> not ready -> drain (calls still running at the timeout answer "shutting
down") -> close.

Start-up failures are one line, `cannot start: ...`, and exit code 2, never a traceback. The
drain timeout is a hard bound: if closing takes longer than `drain_timeout + hook_seconds +
SHUTDOWN_GRACE` (a hook or a sync body that never returns), the process logs what it abandons
and exits with code 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from statefulmcp._errors import ActivationError, ComponentError, StoreError
from statefulmcp.host import Host
from statefulmcp.state import Sync, store_path
from statefulmcp.transport.http import AddressInUse, Readiness, bind, build_app, http_server, url_of
from statefulmcp.transport.server import McpFrontend
from statefulmcp.transport.stdio import checked_stdio

log = logging.getLogger("statefulmcp")

SHUTDOWN_GRACE = 5.0
"""Seconds beyond the drain timeout and the hook bound that closing may take before exit is forced."""

EXIT_FORCED = 1
"""The exit code when shutdown had to abandon work (a hook or sync body that never returned)."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What `statefulmcp serve` was asked to do."""

    paths: list[Path]
    http: tuple[str, int] = ("127.0.0.1", 8000)
    stdio: bool = False
    allow_load: Path | None = None
    state: str | None = None
    durability: Sync = "os"
    drain_timeout: float = 10.0
    max_call_seconds: float | None = 300.0
    log_level: str = "INFO"


class _CannotStart(Exception):
    """Start-up failed; the message is the one line to log."""


async def serve(options: ServeOptions) -> int:
    """Serve until a signal; returns the exit code."""
    try:
        host = Host(
            state=store_path(options.state),
            sync=options.durability,
            max_call_seconds=options.max_call_seconds,
        )
        host.start()
    except StoreError as exc:
        log.error("cannot start: %s", exc)
        return 2
    try:
        await host.load_all(options.paths)
        frontend = McpFrontend(host, allow_load=options.allow_load)
        if options.stdio:
            await _serve_stdio(host, frontend, options)
        else:
            await _serve_http(host, frontend, options)
    except (_CannotStart, ComponentError, ActivationError) as exc:
        log.error("cannot start: %s", exc)
        await _close(host, options)
        return 2
    await _close(host, options)
    log.info("stopped cleanly")
    return 0


async def _close(host: Host, options: ServeOptions) -> None:
    _force_exit_after(options.drain_timeout + host.hook_seconds + SHUTDOWN_GRACE, options.drain_timeout)
    await host.aclose()


def _force_exit_after(seconds: float, drain_timeout: float) -> None:
    """Bound the rest of shutdown: past `seconds`, exit whatever still runs."""

    def force() -> None:
        stuck = [t.name for t in threading.enumerate() if t.name.startswith("statefulmcp-")]
        log.error(
            "shutdown did not finish within %.0f s (drain timeout %.0f s + hooks + grace); exiting now, "
            "abandoning: %s",
            seconds,
            drain_timeout,
            ", ".join(stuck) or "nothing named",
        )
        _exit(EXIT_FORCED)

    timer = threading.Timer(seconds, force)
    timer.daemon = True
    timer.name = "statefulmcp-shutdown-bound"
    timer.start()


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


async def _serve_http(host: Host, frontend: McpFrontend, options: ServeOptions) -> None:
    bind_host, port = options.http
    try:
        sock = bind(bind_host, port)
    except AddressInUse as exc:
        raise _CannotStart(str(exc)) from None
    readiness = Readiness(health=host.health)
    app = build_app(frontend, readiness, bind_host=bind_host)

    async def stopping() -> None:
        readiness.draining = True
        await host.drain(options.drain_timeout)

    server = http_server(app, log_level=options.log_level, on_stop=stopping)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("serving on %s", url_of(sock))
    try:
        await _activate(host, readiness)
    except BaseException:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        raise
    await serving


async def _serve_stdio(host: Host, frontend: McpFrontend, options: ServeOptions) -> None:
    await _activate(host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with checked_stdio() as (read, write):
        serving = asyncio.create_task(
            frontend.server.run(read, write, frontend.server.create_initialization_options())
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            await host.drain(options.drain_timeout)
        serving.cancel()
        stopping.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)
