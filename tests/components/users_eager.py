"""An eager singleton with a tick, and a keyed component that knows its key on activation."""

from statefulmcp import Stateful, background, component, tool


@component(stateful=True, activate="eager", durability="memory")
class Heart(Stateful):
    async def on_activate(self) -> None:
        self.state["activated_as"] = repr(self.key)

    @background(every=0.01)
    async def beat(self) -> None:
        self.state["beats"] = self.state.get("beats", 0) + 1

    @tool
    async def beats(self) -> int:
        return int(self.state.get("beats", 0))

    @tool
    async def activated_as(self) -> str:
        return str(self.state["activated_as"])
