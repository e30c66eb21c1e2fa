"""A component file another component file imports (the double-import trap)."""

from statefulmcp import Stateful, component, tool

SEEN: list[str] = []


@component
class Base(Stateful):
    @tool
    async def seen(self) -> int:
        return len(SEEN)
