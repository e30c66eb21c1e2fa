"""A blocking call inside `async def`: the mistake the engine's watchdog reports."""

import time

from statefulmcp import Stateful, component, tool


@component(stateful=True)
class Sleeper(Stateful):
    @tool
    async def doze_off_blocking(self, seconds: float) -> str:
        time.sleep(seconds)  # noqa: ASYNC251 - the mistake under test
        return "awake"

    @tool
    async def ping(self) -> str:
        return "pong"
