"""A tool that returns its own live list while a fast tick appends to it (torn-reply bait)."""

from statefulmcp import Stateful, background, component, tool


@component(stateful=True, durability="memory")
class Growing(Stateful):
    def __init__(self) -> None:
        self.items: list[int] = []

    @background(every=0.0005)
    async def grow(self) -> None:
        self.items.append(len(self.items))

    @tool
    async def snapshot(self) -> dict[str, object]:
        return {"n": len(self.items), "items": self.items}
