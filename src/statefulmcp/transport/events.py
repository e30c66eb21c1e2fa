"""Resumable streams: what a session's SSE streams carried, kept so a dropped client can resume.

A 2025-11-25 client whose response stream drops mid-call (a proxy timeout, a network change)
reconnects with `GET` and `Last-Event-ID`, and the SDK asks its `EventStore` to replay what the
stream carried after that event. A long-poll that finished while the client was away is
answered that way: its result is the stream's last event.

Each stored event is bound to its session. The SDK hands one store to every session and calls
it with the request id as the stream id, and request ids repeat across sessions (every client's
first call is id 1): a store shared as is would replay one session's events to another. So each
session's transport gets its own view (`make_resumable`), made when the SDK admits the session, the one
place where a session id and its transport meet. An event id from another session, or one that
was evicted, is unknown to the view, and the resuming call gets an error saying so, never a
stream that waits for nothing.

A replay of a call's stream does not return to the SDK until the call's response has been sent:
the SDK's own switch from replay to the live stream has a window in which a message stored
meanwhile is neither replayed nor delivered, and a long-poll answering in that window would
leave its client waiting forever. Waiting here, on the events as they are stored, closes it.

The events are in memory, bounded in total, per stream and by age (the oldest go first), and a
session's events go when the session ends. They are not written to the durable store: a session
does not survive a restart (the SDK forgets it, and its client's next request gets 404 and starts
a new one), so an event could never be replayed after a restart, and writing it would put I/O on
the path of every SSE message for nothing (see docs/guarantees.md).

2026-07-28 has no sessions and no event ids (a request's stream is its whole exchange, and
closing it cancels the call), so none of this applies to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mcp.server.streamable_http import (
    GET_STREAM_KEY,
    EventCallback,
    EventId,
    EventMessage,
    EventStore,
    StreamableHTTPServerTransport,
    StreamId,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import ErrorData, JSONRPCError, JSONRPCMessage, JSONRPCResponse, RequestId

log = logging.getLogger("statefulmcp.http")

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_MAX_EVENTS_PER_STREAM = 1_000
DEFAULT_EVENT_RETENTION_SECONDS = 300.0
RETRY_MS = 1000
"""How long a client waits before it reconnects a dropped stream (the `retry` of the priming event)."""

EVENTS_LOST = -32001
"""The error a resuming call gets when the events it asks for are gone (evicted, or never this
session's): the call's result cannot be recovered, and the client should call again."""


@dataclass(frozen=True, slots=True)
class EventBounds:
    """How many events are kept, and for how long (the operator's `--max-events` flags)."""

    max_events: int = DEFAULT_MAX_EVENTS
    max_per_stream: int = DEFAULT_MAX_EVENTS_PER_STREAM
    retention_seconds: float = DEFAULT_EVENT_RETENTION_SECONDS


@dataclass(slots=True)
class _Event:
    seq: int
    stream: _Stream
    message: JSONRPCMessage | None
    """None for a priming event (the SDK's empty event that hands the client its first id)."""
    at: float


@dataclass(slots=True, eq=False)
class _Stream:
    session: str
    stream_id: StreamId
    events: deque[_Event] = field(default_factory=deque)
    answered: bool = False
    """The stream carried its request's response: a replay that has sent it is done."""
    ended: bool = False
    """The session ended: nothing more will be stored here."""
    waiting: int = 0
    """Replays tailing this stream; while there are any, it stays filed even when empty, so the
    next event is stored where they wait."""
    changed: asyncio.Event | None = None
    """Set (and replaced) when an event is stored or the session ends; made by the first replay
    that waits, so a stream nobody resumes costs no event object."""


class EventLog:
    """Every session's events, in one order, so the oldest goes first whatever its session.

    Everything here runs on the transport's loop (the SDK calls the store from its request and
    session tasks), so nothing needs a lock.
    """

    def __init__(
        self, bounds: EventBounds | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bounds = bounds or EventBounds()
        self._clock = clock
        self._seq = 0
        self._order: OrderedDict[int, _Event] = OrderedDict()
        """Every event by sequence number, oldest first. Not a plain dict: finding a dict's first
        item walks over the slots of the items deleted before it, which a FIFO is made of."""
        self._sessions: dict[str, dict[StreamId, _Stream]] = {}

    def __len__(self) -> int:
        return len(self._order)

    def view(self, session_id: str) -> SessionEvents:
        """The store for one session's transport; its events are invisible to every other view."""
        return SessionEvents(self, _session_key(session_id))

    def session_ended(self, session_id: str) -> None:
        """Drop a session's events and end its waiting replays: the session will not come back."""
        for stream in self._sessions.pop(_session_key(session_id), {}).values():
            for event in stream.events:
                del self._order[event.seq]
            stream.events.clear()
            stream.ended = True
            _wake(stream)

    def store(self, session: str, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        self._seq += 1
        now = self._clock()
        streams = self._sessions.setdefault(session, {})
        stream = streams.get(stream_id)
        if stream is None:
            stream = streams[stream_id] = _Stream(session, stream_id)
        event = _Event(self._seq, stream, message, now)
        stream.events.append(event)
        self._order[event.seq] = event
        if isinstance(message, JSONRPCResponse | JSONRPCError):
            stream.answered = True
        if len(stream.events) > self.bounds.max_per_stream:
            self._evict(stream.events[0])
        self._expire(now)
        _wake(stream)
        return f"{event.seq}:{stream_id}"

    def _expire(self, now: float) -> None:
        """Evict past the bounds, oldest first.

        The latest event of a call still running is its client's place to resume from (a
        long-poll's stream may carry nothing but its priming event until it answers), so age
        alone does not take it: it is kept as if stored now. The count bound still does.
        """
        cutoff = now - self.bounds.retention_seconds
        while self._order:
            oldest = next(iter(self._order.values()))
            if len(self._order) > self.bounds.max_events:
                self._evict(oldest)
            elif oldest.at >= cutoff:
                return
            elif (
                oldest is oldest.stream.events[-1] and not oldest.stream.answered and not _standalone(oldest)
            ):
                oldest.at = now
                self._order.move_to_end(oldest.seq)
            else:
                self._evict(oldest)

    def _evict(self, event: _Event) -> None:
        """Drop `event`, the oldest of its stream (events leave their stream in order)."""
        stream = event.stream
        del self._order[event.seq]
        stream.events.popleft()
        self._unfile_if_empty(stream)

    def _unfile_if_empty(self, stream: _Stream) -> None:
        if stream.events or stream.waiting or stream.ended:
            return
        streams = self._sessions.get(stream.session)
        if streams is not None and streams.get(stream.stream_id) is stream:
            del streams[stream.stream_id]
            if not streams:
                del self._sessions[stream.session]

    def find(self, session: str, event_id: EventId) -> tuple[_Stream, int] | None:
        """The stream of `event_id` and its sequence number, if the event is still this session's."""
        self._expire(self._clock())
        seq_text, _, stream_id = event_id.partition(":")
        if not seq_text.isdecimal():
            return None
        event = self._order.get(int(seq_text))
        if event is None or event.stream.session != session or event.stream.stream_id != stream_id:
            return None
        return event.stream, event.seq

    async def tail(self, stream: _Stream, after: int, send: EventCallback) -> StreamId | None:
        """Send `stream`'s events after `after`, then wait for more until it has answered."""
        stream.waiting += 1
        try:
            while True:
                for event in [event for event in stream.events if event.seq > after]:
                    after = event.seq
                    if event.message is not None:
                        await send(EventMessage(event.message, f"{event.seq}:{stream.stream_id}"))
                if stream.answered or stream.stream_id == GET_STREAM_KEY:
                    # The standalone stream never answers; the SDK tails it live from here.
                    return stream.stream_id
                if stream.ended:
                    await send(
                        EventMessage(_lost(stream.stream_id, "the session ended before the call answered"))
                    )
                    return None
                if stream.changed is None:
                    stream.changed = asyncio.Event()
                await stream.changed.wait()
        finally:
            stream.waiting -= 1
            self._unfile_if_empty(stream)


class SessionEvents(EventStore):
    """The `EventStore` of one session's transport (see the module docstring)."""

    def __init__(self, log: EventLog, session: str) -> None:
        self._log = log
        self._session = session

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        return self._log.store(self._session, stream_id, message)

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        found = self._log.find(self._session, last_event_id)
        if found is None:
            if last_event_id.partition(":")[2] == GET_STREAM_KEY:
                # Nothing waits on the standalone stream: it goes on live from here. Ending it
                # instead would have the client reopen it with the same id, once a second.
                return GET_STREAM_KEY
            await _refuse(last_event_id, send_callback, self._log.bounds)
            return None
        stream, after = found
        return await self._log.tail(stream, after, send_callback)


def _standalone(event: _Event) -> bool:
    return event.stream.stream_id == GET_STREAM_KEY


def _wake(stream: _Stream) -> None:
    if stream.changed is not None:
        stream.changed.set()
        stream.changed = None


async def _refuse(event_id: EventId, send: EventCallback, bounds: EventBounds) -> None:
    """Answer a resumption whose events are gone with an error for its call, so it ends now."""
    _, _, stream_id = event_id.partition(":")
    log.info("refused to resume from unknown event id %.64s", event_id)
    await send(
        EventMessage(
            _lost(
                stream_id,
                f"event {event_id!r} is not known to this session: it expired (events are kept for "
                f"{bounds.retention_seconds:g} s, at most {bounds.max_events} in all and "
                f"{bounds.max_per_stream} per stream) or belongs to another session; the call's result "
                "is lost, so send the request again",
            )
        )
    )


def _lost(stream_id: StreamId, reason: str) -> JSONRPCError:
    request_id: RequestId = int(stream_id) if stream_id.isdecimal() else stream_id
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=ErrorData(code=EVENTS_LOST, message=reason))


def _session_key(session_id: str) -> str:
    """What events are filed under: a digest of the session id, never the id (a credential)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def make_resumable(manager: StreamableHTTPSessionManager, events: EventLog) -> None:
    """Give each session the SDK admits its own view of `events`, and drop them when it ends.

    The SDK has no hook for either, so its two methods that admit and discard a session are
    wrapped on this one manager (pinned SDK; `tests/test_resumable.py` fails if they change).
    """
    admit = manager._admit_session
    discard = manager._discard_session

    def admitted(requestor: Any) -> StreamableHTTPServerTransport | None:
        transport = admit(requestor)
        if transport is not None and transport.mcp_session_id is not None:
            transport._event_store = events.view(transport.mcp_session_id)
        return transport

    async def discarded(session_id: str, transport: StreamableHTTPServerTransport) -> None:
        events.session_ended(session_id)
        await discard(session_id, transport)

    manager._admit_session = admitted  # type: ignore[method-assign]
    manager._discard_session = discarded  # type: ignore[method-assign]
