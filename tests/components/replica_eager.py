"""An eager durable singleton whose tick counts beats: with replicas it must always run somewhere."""

from statefulmcp import Stateful, background, component, tool


@component(stateful=True, activate="eager")
class Pulse(Stateful):
    @background(every=0.02)
    async def beat(self) -> None:
        self.state["beats"] = self.state.get("beats", 0) + 1

    @tool
    async def beats(self) -> int:
        return int(self.state.get("beats", 0))
