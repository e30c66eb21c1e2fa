"""The caller's side of one tool call, for the tool: log messages and progress sent back to it.

A tool asks for it by declaring a parameter annotated `Context`; the host leaves that parameter
out of the input schema and passes the `Context` of the call in progress. The transport makes
one per call (`Caller` is what it sends through) and sets it with `begin`; the engine carries it
into the turn with the rest of the caller's context variables.

A stateful tool runs on the engine loop while the SDK's session belongs to the transport loop,
so each message is posted there through the loops' mailboxes (`engine.mailbox`) and the tool
resumes once it is sent: the SDK is only ever called on its own loop, and a tool's messages
reach the caller in order and before its reply.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, get_args

from mcp_types import LoggingLevel

from statefulmcp._errors import ToolCallError
from statefulmcp.engine import mailbox

log = logging.getLogger("statefulmcp.context")

LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)
"""The MCP log levels, least severe first."""


class Caller(Protocol):
    """Where a call's messages go: the transport's side of one request, on the transport loop."""

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None: ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None: ...


class Context:
    """What a tool may tell its caller while it runs; declare `ctx: Context` to get one.

    `await ctx.log("info", "fetched 3 pages")` sends a `notifications/message` (dropped below the
    level the client set with `logging/setLevel`); `await ctx.report_progress(50, 100)` sends a
    `notifications/progress` (nothing when the caller sent no progress token). A call made
    in-process (`Host.call`) has no MCP caller, and both do nothing. Sending is best effort: a
    caller that went away costs the tool nothing.
    """

    __slots__ = ("_caller", "_loop", "reported")

    def __init__(self, caller: Caller | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._caller = caller
        self._loop = loop
        self.reported = False
        """True once the tool reported progress itself (the transport's heartbeat then stays quiet)."""

    async def log(self, level: LoggingLevel, message: Any, *, logger: str | None = None) -> None:
        """Send `message` (text or any JSON value) to the caller at `level` ("debug" … "emergency")."""
        if level not in LEVELS:
            raise ToolCallError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        caller = self._caller
        if caller is not None:
            await self._send(lambda: caller.log(level, message, logger))

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Tell the caller how far the call is (`progress` of `total`, which may be unknown)."""
        caller = self._caller
        if caller is not None:
            self.reported = True
            await self._send(lambda: caller.progress(progress, total, message))

    async def _send(self, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        target = self._loop
        here = asyncio.get_running_loop()
        if target is None or target is here:
            await _quietly(send)
            return
        sent: asyncio.Future[None] = here.create_future()
        back = mailbox(here)

        def done(task: asyncio.Task[None]) -> None:
            _sending.discard(task)
            back.post(_settle, sent)

        def start() -> None:
            task = target.create_task(_quietly(send))
            _sending.add(task)
            task.add_done_callback(done)

        mailbox(target).post(start)
        await sent


_sending: set[asyncio.Task[None]] = set()
"""Sends in flight on the transport loop, held so none is collected before it ends."""


async def _quietly(send: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        await send()
    except Exception as exc:  # noqa: BLE001 - best effort: the caller may have gone; the call goes on
        log.debug("could not send a message to the caller: %s", exc)


def _settle(sent: asyncio.Future[None]) -> None:
    if not sent.done():
        sent.set_result(None)


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar("statefulmcp_context", default=None)
_DETACHED = Context()
"""The context of calls with no MCP caller (in-process): it sends nothing."""


def current() -> Context:
    """The context of the call in progress."""
    return _current.get() or _DETACHED


def begin(context: Context) -> None:
    """Make `context` the one of the call the running task serves, which ends with the task."""
    _current.set(context)
