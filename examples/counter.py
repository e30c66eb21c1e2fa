"""A stateful counter: one instance for the whole component, kept between calls."""

from statefulmcp import component, tool


@component(stateful=True)
class Counter:
    """Counts calls. Concurrent increments never lose an update: turns run one at a time."""

    def __init__(self) -> None:
        self.value = 0

    async def on_activate(self) -> None:
        self.value = self.state.get("value", 0)

    @tool
    async def increment(self, by: int = 1) -> int:
        """Add `by` to the counter and return the new value."""
        self.value += by
        self.state["value"] = self.value
        return self.value

    @tool
    async def get(self) -> int:
        """The current value."""
        return self.value
