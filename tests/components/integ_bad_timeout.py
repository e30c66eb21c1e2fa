from statefulmcp import component, tool


@component
class Impatient:
    @tool(timeout=-1)
    async def get(self) -> int:
        return 0
