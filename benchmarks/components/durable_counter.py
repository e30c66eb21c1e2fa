"""The benchmark counter with `durability="turn"`: each increment is committed before its reply."""

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="key", durability="turn")
class DurableCounter(Stateful):
    """One counter per key, kept in `self.state` so it survives kill -9."""

    def __init__(self) -> None:
        self.value = 0

    async def on_activate(self) -> None:
        self.value = self.state.get("n", 0)

    @tool
    async def increment(self, key: str) -> int:
        """Add one to the counter `key`, durably, and return the new value."""
        self.value += 1
        self.state["n"] = self.value
        return self.value

    @tool
    async def get(self, key: str) -> int:
        """The counter `key`."""
        return self.value
