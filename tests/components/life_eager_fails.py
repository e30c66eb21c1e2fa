"""A singleton whose eager activation fails: the server must refuse to start, in one line."""

from statefulmcp import Stateful, component, tool


@component(stateful=True, activate="eager")
class Fragile(Stateful):
    async def on_activate(self) -> None:
        raise ConnectionError("device /dev/ttyUSB0 is not there")

    @tool
    async def ping(self) -> str:
        return "pong"
