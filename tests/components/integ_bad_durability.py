from statefulmcp import component, tool


@component(stateful=True, durability="durable")  # type: ignore[arg-type]
class Typo:
    @tool
    async def get(self) -> int:
        return 0
