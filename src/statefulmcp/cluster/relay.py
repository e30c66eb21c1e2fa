"""Relaying a forwarded call's log messages and progress to the caller who sent it.

The owner of a key runs a forwarded call and sends what its tool tells the caller
(`ctx.log`, `ctx.report_progress`) to the replica that forwarded it. That replica sends each
one on through the original request's `Context`, on the transport loop, so the original
caller's level filter and progress token apply there, at the edge (an owner sends every level
to a forwarding replica), in the order they came, and before the reply.

A replica forwards every call to one owner over one shared client session. Progress comes back
through the SDK's per-request callback; log messages through the session's one logging
callback, so each forwarded call carries an id in its `_meta` (`RELAY`) and the owner echoes it
in the `_meta` of each log message it sends for that call (`echo`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

import anyio
from mcp_types import LoggingMessageNotificationParams

from statefulmcp.context import Context

log = logging.getLogger("statefulmcp.cluster")

RELAY = "statefulmcp/relay"
"""The `_meta` key naming a forwarded call, in its request and in its log messages."""

MAX_CALLS = 10_000
"""Forwarded calls relayed at once per loop; past it a call is forwarded without its messages."""

MAX_WAITING = 1_000
"""Messages of one call waiting to be sent on; past it, they are dropped (sending is best effort)."""


def echo(meta: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The `_meta` of a log message sent for a request with this `_meta`: its relay id, if any."""
    call = meta.get(RELAY) if meta is not None else None
    return {RELAY: call} if isinstance(call, str) else None


class Relay:
    """One forwarded call's messages on their way to its caller.

    Each message takes the relay's lock before its first suspension, and an anyio lock is fair,
    so they are sent in the order the SDK received them; `flush` takes it once more after the
    reply arrived, so the reply leaves after every message that came before it.
    """

    __slots__ = ("_context", "_dropped", "_turn", "_waiting")

    def __init__(self, context: Context) -> None:
        self._context = context
        self._turn = anyio.Lock(fast_acquire=True)
        self._waiting = 0
        self._dropped = 0

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        context = self._context
        await self._send(lambda: context.log(params.level, params.data, logger=params.logger))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        context = self._context
        await self._send(lambda: context.report_progress(progress, total, message))

    async def flush(self) -> None:
        """Wait until every message that arrived before now has been sent on."""
        async with self._turn:
            pass
        if self._dropped:
            log.warning(
                "dropped %d messages of a forwarded call: more than %d were waiting for its caller",
                self._dropped,
                MAX_WAITING,
            )

    async def _send(self, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._waiting >= MAX_WAITING:
            self._dropped += 1
            return
        self._waiting += 1
        try:
            async with self._turn:
                await send()
        finally:
            self._waiting -= 1


class Relays:
    """The forwarded calls in flight on one loop's client sessions, by relay id; the sessions'
    logging callback routes each log message to its call."""

    def __init__(self) -> None:
        self._calls: dict[str, Relay] = {}
        self._ids = itertools.count(1)

    @contextlib.contextmanager
    def open(self, context: Context) -> Iterator[tuple[str, Relay] | None]:
        """A relay for one forwarded call while it runs (None past `MAX_CALLS`)."""
        if len(self._calls) >= MAX_CALLS:
            log.warning("%d forwarded calls in flight: this one's messages are not relayed", MAX_CALLS)
            yield None
            return
        call = str(next(self._ids))
        relay = self._calls[call] = Relay(context)
        try:
            yield call, relay
        finally:
            del self._calls[call]

    async def log(self, params: LoggingMessageNotificationParams) -> None:
        """The client sessions' logging callback: a message for a call no longer in flight is dropped."""
        call = (params.meta or {}).get(RELAY)
        relay = self._calls.get(call) if isinstance(call, str) else None
        if relay is not None:
            await relay.log(params)
