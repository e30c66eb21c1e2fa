"""Test components for work between calls: a 1 kHz driver, long-polls, flaky loops, tool calls."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from statefulmcp import Remote, Stateful, background, component, tool


@component(stateful=True, durability="memory")
class Driver(Stateful):
    """Ticks at 1 kHz; records whether a tick ever ran inside a tool call or vice versa."""

    def __init__(self) -> None:
        self.ticks = 0
        self.inside = False
        self.overlaps = 0
        self.events: list[str] = []

    async def on_activate(self) -> None:
        self.state["activated"] = True

    @background(every=0.001)
    async def tick(self) -> None:
        if self.inside:
            self.overlaps += 1
        self.ticks += 1

    @tool
    async def poke(self, n: int) -> int:
        """Hold the turn across awaits; a tick arriving meanwhile must wait."""
        self.inside = True
        before = self.ticks
        for _ in range(3):
            await asyncio.sleep(0.002)
        changed = self.ticks != before
        self.inside = False
        self.events.append(f"poke{n}")
        return 1 if changed else 0

    @tool
    async def report(self) -> dict[str, int]:
        return {"ticks": self.ticks, "overlaps": self.overlaps, "pokes": len(self.events)}


@component(stateful=True, key="room", durability="memory")
class Mailbox(Stateful):
    """A long-poll: `wait_for` releases the turn until `n` messages are there."""

    def __init__(self) -> None:
        self.items: list[str] = []

    @tool
    async def push(self, room: str, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @tool
    async def wait_for(self, room: str, n: int, timeout: float = 10.0) -> list[str]:
        await self.wait_until(lambda: len(self.items) >= n, timeout=timeout)
        return self.items[:n]

    @tool
    async def wait_or_default(self, room: str, n: int, timeout: float) -> str:
        try:
            await self.wait_until(lambda: len(self.items) >= n, timeout=timeout)
        except TimeoutError:
            return "timed out"
        return "ready"


@component(stateful=True, durability="memory")
class Flaky(Stateful):
    """A tick that fails twice, then works: it must be restarted and reported."""

    def __init__(self) -> None:
        self.calls = 0
        self.ok = 0

    @background(every=0.02)
    async def work(self) -> None:
        self.calls += 1
        if self.calls <= 2:
            raise RuntimeError(f"flaky failure {self.calls}")
        self.ok += 1

    @tool
    async def ok_ticks(self) -> int:
        return self.ok


@component(stateful=True, durability="memory")
class Slow(Stateful):
    @tool(timeout=0.3)
    async def nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"

    @tool(timeout=0.3)
    def sync_nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "woke"

    @tool
    async def long_nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke"


@component(stateful=True, key="room", durability="memory", uses={"post": "mailbox_push", "me": "relay_echo"})
class Relay(Stateful):
    post: Callable[..., Awaitable[Any]]  # given by `uses=`
    me: Callable[..., Awaitable[Any]]
    """Calls another component's tool, and (wrongly) its own."""

    @tool
    async def forward(self, room: str, item: str) -> int:
        return int(await self.post(room=room, item=item))

    @tool
    async def echo(self, room: str) -> str:
        return room

    @tool
    async def call_myself(self, room: str) -> str:
        return str(await self.me(room=room))


REMOTE_URL = os.environ.get("REMOTE_URL", "http://127.0.0.1:9/mcp")


@component(
    stateful=True,
    durability="memory",
    uses={
        "remote_count": Remote(REMOTE_URL, "text_word_count"),
        "remote_nap": Remote(REMOTE_URL, "slow_long_nap", timeout=0.5),
        "remote_missing": Remote(REMOTE_URL, "no_such_tool"),
    },
)
class Caller(Stateful):
    remote_count: Callable[..., Awaitable[Any]]  # given by `uses=`
    remote_nap: Callable[..., Awaitable[Any]]
    remote_missing: Callable[..., Awaitable[Any]]

    @tool
    async def count_remote(self, text: str) -> int:
        return int(await self.remote_count(text=text))

    @tool
    async def nap_remote(self, seconds: float) -> str:
        return str(await self.remote_nap(seconds=seconds))

    @tool
    async def missing_remote(self) -> str:
        return str(await self.remote_missing())
