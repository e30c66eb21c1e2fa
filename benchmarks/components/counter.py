"""The benchmark counter as a statefulmcp component, keyed, with in-memory state only."""

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="key", durability="memory")
class Counter(Stateful):
    """One counter per key; turns of one key never interleave, so no update is lost."""

    def __init__(self) -> None:
        self.value = 0

    @tool
    async def increment(self, key: str) -> int:
        """Add one to the counter `key` and return the new value."""
        self.value += 1
        return self.value

    @tool
    async def get(self, key: str) -> int:
        """The counter `key`."""
        return self.value
