"""Tools and a background loop whose own code raises `asyncio.CancelledError` when nobody cancelled them.

Awaiting a task that something else cancelled does this; it is an error of that call, not a
request to cancel it.
"""

import asyncio

from statefulmcp import Stateful, background, component, tool


async def _await_a_cancelled_task() -> None:
    task = asyncio.ensure_future(asyncio.sleep(60))
    task.cancel()
    await task


@component(stateful=True)
class Cancelled(Stateful):
    @tool
    async def awaits(self) -> int:
        self.state["half"] = "written"
        await _await_a_cancelled_task()
        return 0

    @tool
    def raises_sync(self) -> int:
        raise asyncio.CancelledError

    @tool
    async def bump(self) -> int:
        count = int(self.state.get("count", 0)) + 1
        self.state["count"] = count
        return count

    @tool
    async def half(self) -> bool:
        return "half" in self.state


@component
class CancelledStateless(Stateful):
    @tool
    async def awaits(self) -> int:
        await _await_a_cancelled_task()
        return 0

    @tool
    def raises_sync(self) -> int:
        raise asyncio.CancelledError


@component(stateful=True, activate="eager")
class CancelledLoop(Stateful):
    @background
    async def loop(self) -> None:
        await _await_a_cancelled_task()

    @tool
    async def idle(self) -> int:
        return 0
