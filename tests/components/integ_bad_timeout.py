from statefulmcp import Stateful, component, tool


@component
class Impatient(Stateful):
    @tool(timeout=-1)
    async def get(self) -> int:
        return 0
