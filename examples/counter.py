"""A stateful counter: one instance for the whole component, kept between calls."""

from statefulmcp import component, tool


@component(stateful=True)
class Counter:
    """Counts calls. Concurrent increments never lose an update: turns run one at a time.

    The value lives in `self.state` and nowhere else: if a commit fails, `self.state` is rolled
    back, so the next call starts from what is really on disk (a copy in an attribute would not be).
    """

    @tool
    async def increment(self, by: int = 1) -> int:
        """Add `by` to the counter and return the new value."""
        value = self.state.get("value", 0) + by
        self.state["value"] = value
        return value

    @tool
    async def get(self) -> int:
        """The current value."""
        return int(self.state.get("value", 0))
