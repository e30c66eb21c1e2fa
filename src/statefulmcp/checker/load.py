"""The clients: concurrent callers that spread calls over every replica and record each one.

Each client sends its calls to one replica and moves to the next after a failure (as a client
given a list of replicas does), so calls are spread over all of them, and those that land on a
replica that does not own the key are forwarded. Each call is one MCP exchange with the official client (`ClientSession` over streamable HTTP,
sessionless), opened for that call alone. A client that kept a session per replica would have
to survive that replica's death, and the SDK's transport ends its task group (cancelling the
caller) when its server vanishes; a call in a task of its own, awaited with a bound, turns every
such ending into one recorded failure. A failed call is recorded as sent and not acknowledged,
and the client moves on to the next replica, as a client of replicas should.

Keys come in *phases*: counters `c<phase>-<i>` that every client hammers, and registers that
stay the same throughout. A new phase (after each fault) gives the replicas that joined or
came back keys of their own: its first call for key `i` goes to replica `i mod n`, which claims
it, so every replica owns busy keys when the next fault picks its victim.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from statefulmcp.checker.history import Call, History, Kind
from statefulmcp.checker.target import Target


@dataclass(frozen=True)
class Answer:
    """What one call came back with: a value, or an error (`transport`: no tool answer at all)."""

    ok: bool
    value: Any = None
    error: str = ""
    transport: bool = False


async def call_tool(
    http: httpx2.AsyncClient, url: str, name: str, arguments: dict[str, Any], timeout: float
) -> Answer:
    """One tool call on its own session, bounded by `timeout`; never raises (but on cancellation).

    `http` is shared by all calls: its connections are reused, and making a client per call
    (an SSL context each) would cost more than the call.
    """

    async def go() -> CallToolResult:
        async with (
            streamable_http_client(url, http_client=http, terminate_on_close=False) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.discover()
            return await session.call_tool(name, arguments, read_timeout_seconds=timeout)

    task = asyncio.ensure_future(go())
    task.add_done_callback(_retrieve)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5)
    if not done:
        return Answer(False, error=f"no answer within {timeout:g} s", transport=True)
    if task.cancelled():  # the SDK's transport ended under the call: the server went away
        return Answer(False, error="the connection ended during the call", transport=True)
    exc = task.exception()
    if exc is not None:
        return Answer(False, error=f"{type(exc).__name__}: {exc}", transport=True)
    result = task.result()
    if result.is_error:
        return Answer(False, error=" ".join(getattr(b, "text", "") for b in result.content))
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return Answer(True, content["result"])
    return Answer(True, content)


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Take a call's outcome even when nobody waits for it any more (it was abandoned after its
    time-out), so asyncio does not log it as never retrieved."""
    if not task.cancelled():
        task.exception()


class Load:
    """`clients` callers over the replicas `urls()` names, until `stop()` or a bound is reached."""

    def __init__(
        self,
        target: Target,
        urls: Callable[[], list[str]],
        history: History,
        rng: random.Random,
        *,
        clients: int,
        counters: int,
        registers: int,
        call_timeout: float,
        max_calls: int,
        max_seconds: float,
        slow: float = 0.5,
    ) -> None:
        self.target = target
        self.urls = urls
        self.history = history
        self.rng = rng
        self.clients = clients
        self.counters = counters
        self.registers = [f"r{i}" for i in range(registers)] if target.registers else []
        self.call_timeout = call_timeout
        self.max_calls = max_calls
        self.deadline = time.monotonic() + max_seconds
        self.phase = 0
        self.hot: list[str] = []
        self.slow = slow
        self._stop = asyncio.Event()
        self._writes = 0
        self._pending: dict[str, dict[int, float]] = {}
        self._answered: dict[str, float] = {}
        self._http = httpx2.AsyncClient(timeout=httpx2.Timeout(call_timeout))

    async def close(self) -> None:
        await self._http.aclose()

    def stop(self) -> None:
        self._stop.set()

    @property
    def running(self) -> bool:
        return (
            not self._stop.is_set()
            and len(self.history.calls) < self.max_calls
            and time.monotonic() < self.deadline
        )

    async def call(self, kind: Kind, key: str, arg: int | str | None, url: str) -> Call:
        """Make one call and record it."""
        name, arguments = self.target.arguments(kind, key, arg)
        record = self.history.send(kind, key, arg, url)
        pending = self._pending.setdefault(url, {})
        pending[record.index] = record.sent
        try:
            answer = await call_tool(self._http, url, name, arguments, self.call_timeout)
        finally:
            del pending[record.index]
        if not answer.transport:
            self._answered[url] = time.monotonic()
        if answer.ok:
            self.history.ack(record, answer.value)
        else:
            self.history.fail(record, answer.error, transport=answer.transport)
        return record

    async def new_phase(self) -> list[str]:
        """Switch the clients to fresh counter keys, key `i` claimed first through replica `i mod n`."""
        self.phase += 1
        keys = [f"c{self.phase}-{i}" for i in range(self.counters)]
        for i, key in enumerate(keys):
            urls = self.urls()
            for attempt in range(3 * len(urls)):
                if not self.running:
                    break
                record = await self.call("incr", key, 1, urls[(i + attempt) % len(urls)])
                if record.acknowledged:
                    break
        self.hot = keys
        return keys

    async def run(self) -> None:
        await asyncio.gather(*(self._client(n) for n in range(self.clients)))

    def healthy(self) -> list[str]:
        """The replicas that answer: not one whose oldest pending call has waited `slow` seconds
        with no answer from it since (stopped, or unreachable). All of them if none answers.

        A load balancer ejects such a replica the same way; clients that kept sending to a
        stopped replica would all be stuck there within a second, and the run would measure
        its own clients instead of the cluster.
        """
        now = time.monotonic()

        def answers(url: str) -> bool:
            pending = self._pending.get(url)
            if not pending:
                return True
            oldest = min(pending.values())
            return now - oldest < self.slow or self._answered.get(url, 0.0) > oldest

        urls = self.urls()
        return [u for u in urls if answers(u)] or urls

    async def _client(self, n: int) -> None:
        """Calls to one replica (its `home`), moving to the next one after a failure."""
        home = n
        while self.running:
            urls = self.healthy()
            if not self.hot or not urls:
                await _wait(self._stop, 0.05)
                continue
            kind, key, arg = self._pick(n)
            record = await self.call(kind, key, arg, urls[home % len(urls)])
            if not record.acknowledged:
                home += 1
                await _wait(self._stop, 0.01)  # a refused call comes back at once; do not spin

    def _pick(self, n: int) -> tuple[Kind, str, int | str | None]:
        roll = self.rng.random()
        if self.registers and roll < 0.2:
            key = self.rng.choice(self.registers)
            if roll < 0.12:
                self._writes += 1
                return "put", key, f"w{n}-{self._writes}"
            return "read", key, None
        key = self.rng.choice(self.hot)
        if roll > 0.92:
            return "count", key, None
        return "incr", key, 1


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
