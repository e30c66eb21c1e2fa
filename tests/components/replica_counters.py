"""Keyed counters for the replica tests: one instance per key, its count durable every turn."""

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="key")
class Counters(Stateful):
    """One counter per key."""

    def __init__(self) -> None:
        self.n = 0

    async def on_activate(self) -> None:
        self.n = self.state.get("n", 0)

    @tool
    async def incr(self, key: str, by: int = 1) -> int:
        """Add `by` and return the new count."""
        self.n += by
        self.state["n"] = self.n
        return self.n

    @tool
    async def get(self, key: str) -> int:
        """The count."""
        return self.n

    @tool
    async def wait_for(self, key: str, n: int) -> int:
        """A long-poll: answer once the count reaches `n`."""
        await self.wait_until(lambda: self.n >= n, timeout=120)
        return self.n
