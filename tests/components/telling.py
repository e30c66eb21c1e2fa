"""Tools that tell their caller how they are doing, through a `Context`: stateful and stateless."""

from __future__ import annotations

from statefulmcp import Context, component, tool


@component(stateful=True)
class Chatty:
    """A stateful counter that logs at three levels and reports progress on each step."""

    def __init__(self) -> None:
        self.count = 0

    @tool
    async def count_to(self, n: int, ctx: Context) -> int:
        """Counts to n, logging each step and reporting it as progress."""
        await ctx.log("debug", "starting")
        for step in range(1, n + 1):
            self.count += 1
            await ctx.report_progress(step, n, f"step {step}")
            await ctx.log("info", f"step {step}")
        await ctx.log("warning", {"done": self.count}, logger="chatty")
        return self.count


@component
class Quiet:
    """A stateless tool with a Context."""

    @tool
    async def echo(self, text: str, ctx: Context) -> str:
        """Logs its text, then returns it."""
        await ctx.log("error", text)
        await ctx.report_progress(1, 1)
        return text
