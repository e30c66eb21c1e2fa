"""A durable 1 kHz tick whose count a tool reports (what a reply acknowledges must survive kill -9)."""

from statefulmcp import Stateful, background, component, tool


@component(stateful=True)
class Beat(Stateful):
    @background(every=0.001)
    async def tick(self) -> None:
        self.state["n"] = self.state.get("n", 0) + 1

    @tool
    async def n(self) -> int:
        return int(self.state.get("n", 0))
