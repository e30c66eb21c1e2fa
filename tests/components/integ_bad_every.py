from statefulmcp import Stateful, background, component, tool


@component(stateful=True)
class Spinner(Stateful):
    @background(every=float("nan"))
    async def spin(self) -> None:
        pass

    @tool
    async def get(self) -> int:
        return 0
