"""Names and keys a caller controls: a lone surrogate in either must fail that call only."""

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="symbol")
class Quotes(Stateful):
    @tool
    async def put(self, symbol: str, name: str) -> int:
        self.state[name] = 1
        return len(self.state)

    @tool
    async def bad_name(self, symbol: str) -> int:
        self.state["\ud800"] = 1
        return 0


@component(stateful=True)
class Tally(Stateful):
    @tool
    async def bump(self) -> int:
        count = int(self.state.get("count", 0)) + 1
        self.state["count"] = count
        return count
