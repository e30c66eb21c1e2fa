"""`notifications/resources/updated`, the transport's side: to whoever subscribed, never stalling a turn.

The host posts the URIs each commit updated to this loop (`Host.on_resources_updated`).
Handshake-era clients subscribe with `resources/subscribe` on their connection and hear on its
standalone stream; 2026-07-28 clients open `subscriptions/listen` with the URIs they watch and
hear through the SDK's subscription bus, which filters by what each stream asked for.

Every subscriber (each connection, and the bus) has its own bounded queue drained by its own
task, in order: a slow or gone client delays nobody, and past the bound its updates are dropped
with a log line (an update only says "read it again", so the next one covers a dropped one).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from mcp.server.connection import Connection
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

log = logging.getLogger("statefulmcp.transport")

MAX_SUBSCRIPTIONS = 1000
"""The most resource subscriptions one session keeps (invariant 10: nothing grows unbounded)."""

MAX_QUEUED = 1000
"""Updates waiting to be sent to one subscriber, at most; past it, new ones are dropped."""

_SUBSCRIPTIONS = "statefulmcp/resource-subscriptions"
"""The `Connection.state` entry of the URIs its client subscribed to (`resources/subscribe`)."""

_OUTBOX = "statefulmcp/resource-updates"
"""The `Connection.state` entry of the connection's queue of updates to send."""


class _Outbox:
    """One subscriber's queue of updated URIs, sent in order by a task that runs while it has any."""

    __slots__ = ("_queue", "_send", "_task", "_tasks", "dropped", "label")

    def __init__(self, send: Callable[[str], Awaitable[None]], label: str, tasks: set[asyncio.Task[None]]):
        self._send = send
        self._queue: deque[str] = deque()
        self._task: asyncio.Task[None] | None = None
        self._tasks = tasks
        self.label = label
        self.dropped = 0
        """Updates dropped since the queue last had room (logged once when it fills, once after)."""

    def put(self, uris: Sequence[str]) -> None:
        if len(self._queue) + len(uris) > MAX_QUEUED:
            if not self.dropped:
                log.warning(
                    "dropping resource updates for %s: %d are still waiting to be sent (a slow client)",
                    self.label,
                    len(self._queue),
                )
            self.dropped += len(uris)
            return
        if self.dropped:
            log.warning("%s caught up; %d resource updates were dropped meanwhile", self.label, self.dropped)
            self.dropped = 0
        self._queue.extend(uris)
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name="statefulmcp-resource-updates")
            self._tasks.add(self._task)
            self._task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                uri = self._queue.popleft()
                try:
                    await self._send(uri)
                except Exception as exc:  # noqa: BLE001 - best effort: a client that went away costs nobody
                    log.debug("could not send a resource update to %s: %s", self.label, exc)
        finally:
            self._task = None


class ResourceUpdates:
    """Who subscribed to which URI, and the delivery of updates to them (see the module docs)."""

    def __init__(self, bus: SubscriptionBus) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._bus = _Outbox(
            lambda uri: bus.publish(ResourceUpdated(uri)), "subscriptions/listen", self._tasks
        )
        # Weak, so a connection that closed goes away by itself.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()

    def subscribe(self, connection: Connection, uri: str) -> None:
        """Keep `uri` on the connection, for the session's life (at most `MAX_SUBSCRIPTIONS`)."""
        subscribed: set[str] = connection.state.setdefault(_SUBSCRIPTIONS, set())
        if uri not in subscribed and len(subscribed) >= MAX_SUBSCRIPTIONS:
            raise MCPError(
                INVALID_PARAMS,
                f"this session already has {MAX_SUBSCRIPTIONS} resource subscriptions, the most it may "
                "keep; unsubscribe from one first",
            )
        subscribed.add(uri)
        self._connections.add(connection)

    def unsubscribe(self, connection: Connection, uri: str) -> None:
        connection.state.get(_SUBSCRIPTIONS, set()).discard(uri)

    def updated(self, uris: tuple[str, ...]) -> None:
        """The host's listener: `uris` changed (a commit landed). Runs on the transport loop."""
        self._bus.put(uris)
        for connection in list(self._connections):
            subscribed: set[str] = connection.state.get(_SUBSCRIPTIONS, set())
            hits = [uri for uri in uris if uri in subscribed]
            if hits:
                _outbox(connection, self._tasks).put(hits)

    async def aclose(self) -> None:
        """Stop the sends still queued (the server is stopping) and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _outbox(connection: Connection, tasks: set[asyncio.Task[None]]) -> _Outbox:
    outbox: _Outbox | None = connection.state.get(_OUTBOX)
    if outbox is None:
        # The queue keeps a weak reference: it lives in the connection's own state.
        ref = weakref.ref(connection)

        async def send(uri: str) -> None:
            alive = ref()
            if alive is not None:
                await alive.send_resource_updated(uri)

        outbox = connection.state[_OUTBOX] = _Outbox(send, "a subscribed session", tasks)
    return outbox
