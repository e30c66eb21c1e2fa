from statefulmcp import Stateful, component, tool


@component(stateful=True, durability="durable")  # type: ignore[call-overload]
class Typo(Stateful):
    @tool
    async def get(self) -> int:
        return 0
