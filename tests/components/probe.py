"""Test components: a counter whose tool awaits mid-body, a keyed store, a stateless probe."""

import asyncio

from statefulmcp import Stateful, component, tool


@component(stateful=True)
class Tally(Stateful):
    def __init__(self) -> None:
        self.value = 0
        self.inside = 0
        self.overlaps = 0

    @tool
    async def increment(self) -> int:
        """Add one, awaiting in the middle; records whether another turn ever ran inside."""
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        before = self.value
        await asyncio.sleep(0.001)
        self.value = before + 1
        self.inside -= 1
        return self.value

    @tool
    def sync_increment(self) -> int:
        """A sync body: runs on a worker thread while the turn is held."""
        self.inside += 1
        if self.inside > 1:
            self.overlaps += 1
        before = self.value
        import time

        time.sleep(0.001)
        self.value = before + 1
        self.inside -= 1
        return self.value

    @tool
    async def overlaps_seen(self) -> int:
        return self.overlaps

    @tool
    async def fail(self, message: str) -> int:
        raise ValueError(message)

    @tool
    async def unserializable(self) -> object:
        return object()


@component(stateful=True, key="room")
class Room(Stateful):
    def __init__(self) -> None:
        self.messages: list[str] = []

    @tool
    async def post(self, room: str, message: str) -> list[str]:
        self.messages.append(message)
        return self.messages


@component
class Fresh(Stateful):
    """Stateless: a new instance per call."""

    def __init__(self) -> None:
        self.calls = 0

    @tool
    def bump(self) -> int:
        self.calls += 1
        return self.calls
