"""A 1 kHz background tick and a plain counter, to measure tick lateness while serving calls."""

from statefulmcp import background, component, tool


@component(stateful=True, key="key", durability="memory")
class Ticking:
    """Ticks every millisecond once activated; `start` activates it."""

    def __init__(self) -> None:
        self.ticks = 0

    @tool
    async def start(self, key: str) -> int:
        """Activate the instance (which starts its tick); returns ticks so far."""
        return self.ticks

    @background(every=0.001)
    async def tick(self) -> None:
        self.ticks += 1


@component(stateful=True, key="key", durability="memory")
class Load:
    """The calls served while the tick runs."""

    def __init__(self) -> None:
        self.value = 0

    @tool
    async def increment(self, key: str) -> int:
        """Add one and return the new value."""
        self.value += 1
        return self.value
