"""State as resources and resource update notifications: a keyed ticker and a singleton board
that serve their state, a ticking clock, and a keyed component that keeps its state private."""

from __future__ import annotations

from statefulmcp import Stateful, background, component, prompt, resource, tool


@component(stateful=True, key="symbol", state_resource=True)
class Ticker(Stateful):
    """Prices per symbol; its state is a resource, and so is its last price."""

    @tool
    def add(self, symbol: str, price: float) -> int:
        """Appends a price; returns how many there are."""
        prices = [*self.state.get("prices", []), price]
        self.state["prices"] = prices
        return len(prices)

    @tool
    def fail(self, symbol: str) -> None:
        """Writes, announces, then raises: nothing of it is committed."""
        self.state["prices"] = ["torn"]
        self.resource_updated(f"ticker://{symbol}/notes/torn")
        raise RuntimeError("the feed broke")

    @tool
    def peek(self, symbol: str) -> int:
        """Reads without writing."""
        return len(self.state.get("prices", []))

    @tool
    def note(self, symbol: str, name: str) -> None:
        """Changes nothing in the state, but says a note changed."""
        self.resource_updated(f"ticker://{symbol}/notes/{name}")

    @resource("ticker://{symbol}/last")
    def last(self, symbol: str) -> str:
        """The last price of a symbol."""
        prices = self.state.get("prices", [])
        return str(prices[-1]) if prices else ""

    @resource("ticker://{symbol}/notes/{name}", complete={"name": lambda typed: ["open", "close"]})
    def notes(self, symbol: str, name: str) -> str:
        """A note on a symbol."""
        return f"{name} of {symbol}"

    @prompt
    def summary(self, symbol: str) -> str:
        """Summarise a symbol."""
        return f"{symbol} has {len(self.state.get('prices', []))} prices"


@component(stateful=True, state_resource=True)
class Board(Stateful):
    """A singleton whose static resource is updated with its state."""

    @tool
    def post(self, text: str) -> int:
        """Posts a line on the board."""
        lines = [*self.state.get("lines", []), text]
        self.state["lines"] = lines
        return len(lines)

    @resource("board://lines")
    def lines(self) -> str:
        """The board's lines."""
        return "\n".join(self.state.get("lines", []))


@component(stateful=True, state_resource=True, durability="memory")
class Clock(Stateful):
    """Ticks three times, each tick a committed turn, then stops writing."""

    @background(every=0.02)
    async def tick(self) -> None:
        if self.state.get("ticks", 0) < 3:
            self.state["ticks"] = self.state.get("ticks", 0) + 1

    @tool
    def ticks(self) -> int:
        """How many ticks committed."""
        return int(self.state.get("ticks", 0))


@component(stateful=True, key="user")
class Diary(Stateful):
    """Private: its state is not served (state_resource is off by default)."""

    @tool
    def write(self, user: str, text: str) -> None:
        """Writes the diary of a user."""
        self.state["text"] = text
