"""An `on_deactivate` that never returns, and a sync body in flight at unload.

The sync body waits on `GATE`, which the stateless `Gate.release` tool sets: the test ends the
body itself instead of guessing how long it should sleep.
"""

import asyncio
import threading

from statefulmcp import Stateful, component, tool

GATE = threading.Event()


@component(stateful=True, key="who")
class Stubborn(Stateful):
    @tool
    async def touch(self, who: str) -> int:
        return 1

    @tool
    def hold(self, who: str) -> int:
        GATE.wait(120)
        return 1

    async def on_deactivate(self) -> None:
        if self.key == "stuck":  # only this one, so the server's own shutdown stays quick
            await asyncio.Event().wait()


@component
class Gate(Stateful):
    @tool
    async def release(self) -> bool:
        GATE.set()
        return True
