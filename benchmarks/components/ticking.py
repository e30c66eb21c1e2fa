"""A 1 kHz background tick, to measure tick lateness (served beside `counter.py` for the load)."""

from statefulmcp import Stateful, background, component, tool


@component(stateful=True, key="key", durability="memory")
class Ticking(Stateful):
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
