"""Smaller mistakes: wait_until in on_activate, writing state when stateless, unsendable results."""

import asyncio
from collections.abc import Iterator
from typing import Any

from statefulmcp import Stateful, component, tool


@component(stateful=True)
class WaitsInActivate(Stateful):
    async def on_activate(self) -> None:
        await self.wait_until(lambda: False, timeout=1)

    @tool
    async def get(self) -> int:
        return 0


@component(stateful=True)
class SlowStart(Stateful):
    """Counts its activations; `on_activate` yields the loop, so concurrent first calls overlap it."""

    activations = 0

    async def on_activate(self) -> None:
        type(self).activations += 1
        await asyncio.sleep(0.3)

    @tool
    async def count(self) -> int:
        return type(self).activations


@component
class Careless(Stateful):
    @tool
    async def write(self) -> int:
        self.state["x"] = 1
        return 1

    @tool
    async def gen(self) -> list[int]:
        return _numbers()  # type: ignore[return-value]

    @tool
    async def deep(self) -> Any:
        value: list[Any] = []
        for _ in range(2000):
            value = [value]
        return value

    @tool
    async def surrogate(self) -> str:
        return "\ud800"

    @tool
    async def fine(self) -> int:
        return 7


def _numbers() -> Iterator[int]:
    yield from range(3)
