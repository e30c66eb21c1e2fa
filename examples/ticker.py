"""A keyed component: one moving window of prices per symbol."""

from statefulmcp import component, tool


@component(stateful=True, key="symbol")
class Ticker:
    """Moving window of the last 1000 prices, one instance per symbol."""

    def __init__(self) -> None:
        self.window: list[float] = []

    async def on_activate(self) -> None:
        self.window = list(self.state.get("window", []))

    @tool
    async def add(self, symbol: str, price: float) -> int:
        """Record a price for `symbol`; returns how many prices the window holds."""
        self.window = [*self.window, price][-1000:]
        self.state["window"] = self.window
        return len(self.window)

    @tool
    async def stats(self, symbol: str) -> dict[str, float]:
        """Count, mean, min and max of the window of `symbol`."""
        if not self.window:
            return {"count": 0, "mean": 0.0, "min": 0.0, "max": 0.0}
        return {
            "count": len(self.window),
            "mean": sum(self.window) / len(self.window),
            "min": min(self.window),
            "max": max(self.window),
        }
