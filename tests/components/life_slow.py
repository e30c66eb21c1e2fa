"""Calls that outlast a drain: a long-poll that never holds, and a sync body that sleeps."""

import time

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="who")
class Slow(Stateful):
    @tool
    async def wait_forever(self, who: str) -> str:
        await self.wait_until(lambda: self.state.get("never", False), timeout=600)
        return "woke"

    @tool
    def nap(self, who: str, seconds: float) -> str:
        time.sleep(seconds)
        return "rested"

    @tool
    async def waiting(self, who: str) -> int:
        return 0
