from statefulmcp import Stateful, component, tool


@component(stateful=True, key="room")
class Lobby(Stateful):
    @tool
    async def say(self, text: str) -> str:
        return text
