from statefulmcp import component, tool


@component(stateful=True, key="room")
class Lobby:
    @tool
    async def say(self, text: str) -> str:
        return text
