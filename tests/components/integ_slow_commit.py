from statefulmcp import Stateful, component, tool


@component(stateful=True)
class Saver(Stateful):
    @tool(timeout=1)
    async def save(self, n: int) -> int:
        self.state["n"] = n
        return n

    @tool
    async def get(self) -> int:
        return int(self.state.get("n", 0))
