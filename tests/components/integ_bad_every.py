from statefulmcp import background, component, tool


@component(stateful=True)
class Spinner:
    @background(every=float("nan"))
    async def spin(self) -> None:
        pass

    @tool
    async def get(self) -> int:
        return 0
