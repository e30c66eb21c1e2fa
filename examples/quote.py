"""State as resources: a simulated price per symbol that moves every second, watched by clients.

`state_resource=True` serves each instance's committed `self.state` as the resource
`state://quote/<symbol>`; a client that subscribes hears `notifications/resources/updated`
after every tick that commits a move (and reads the new price), never before the commit.
"""

import random

from statefulmcp import Stateful, background, component, resource, tool


@component(stateful=True, key="symbol", state_resource=True)
class Quote(Stateful):
    """A random-walk price per symbol, one tick a second once the symbol is opened."""

    @tool
    async def open(self, symbol: str, price: float = 100.0) -> float:
        """Start quoting `symbol` at `price` (or carry on where it was); returns the price."""
        if "price" not in self.state:
            self.state["price"] = price
            self.state["ticks"] = 0
        return float(self.state["price"])

    @background(every=1.0)
    async def move(self) -> None:
        if "price" in self.state:
            self.state["price"] = round(self.state["price"] * (1 + random.gauss(0, 0.01)), 2)
            self.state["ticks"] += 1

    @resource("quote://{symbol}/price")
    def price(self, symbol: str) -> str:
        """The last price of `symbol`, as text (updated with the state)."""
        return str(self.state.get("price", ""))
