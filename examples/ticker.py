"""A keyed component: one moving window of prices per symbol."""

from statefulmcp import component, tool


@component(stateful=True, key="symbol")
class Ticker:
    """Moving window of the last 1000 prices, one instance per symbol (`self.key`)."""

    @tool
    async def add(self, symbol: str, price: float) -> int:
        """Record a price for `symbol`; returns how many prices the window holds."""
        window = [*self.state.get("window", []), price][-1000:]
        self.state["window"] = window
        return len(window)

    @tool
    async def stats(self, symbol: str) -> dict[str, float]:
        """Count, mean, min and max of the window of `symbol`."""
        window: list[float] = self.state.get("window", [])
        if not window:
            return {"count": 0, "mean": 0.0, "min": 0.0, "max": 0.0}
        return {
            "count": len(window),
            "mean": sum(window) / len(window),
            "min": min(window),
            "max": max(window),
        }
