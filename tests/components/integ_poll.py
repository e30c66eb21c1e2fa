"""A long-poll that writes when it times out (the pattern the docs describe), with and without handles."""

from statefulmcp import Stateful, component, tool


@component(stateful=True)
class Poll(Stateful):
    @tool
    async def wait_then_write(self) -> int:
        try:
            await self.wait_until(lambda: self.state.get("n", 0) >= 1000, timeout=4)
        except TimeoutError:
            self.state["n"] = 1
        return int(self.state.get("n", 0))

    @tool
    async def increment(self) -> int:
        n = self.state.get("n", 0) + 1
        self.state["n"] = n
        return int(n)

    @tool
    async def get(self) -> int:
        return int(self.state.get("n", 0))


@component(stateful=True, key="session", handles=True)
class Conversation(Stateful):
    @tool
    async def wait_then_write(self, session: str) -> int:
        try:
            await self.wait_until(lambda: self.state.get("n", 0) >= 1000, timeout=4)
        except TimeoutError:
            self.state["n"] = 1
        return int(self.state.get("n", 0))

    @tool
    async def increment(self, session: str) -> int:
        n = self.state.get("n", 0) + 1
        self.state["n"] = n
        return int(n)
