"""A long-poll that waits for a gate another caller opens, and a call that sends many events."""

from statefulmcp import Context, Stateful, component, tool


@component(stateful=True)
class Gate(Stateful):
    @tool
    async def wait_open(self, ctx: Context, timeout: float = 120) -> str:
        """Tell the caller it waits (its stream is then open), then wait for `gate_open`."""
        await ctx.report_progress(0, message="waiting for the gate")
        await self.wait_until(lambda: self.state.get("by") is not None, timeout=timeout)
        self.state["answered"] = True
        return f"opened by {self.state['by']}"

    @tool
    async def open(self, by: str) -> bool:
        self.state["by"] = by
        return True

    @tool
    async def answered(self) -> bool:
        return bool(self.state.get("answered", False))

    @tool
    async def chatty(self, ctx: Context, n: int) -> int:
        """Send `n` progress events, then answer."""
        for i in range(n):
            await ctx.report_progress(i, n)
        return n
