"""A per-session component whose tools take no key argument: one tally per MCP session."""

from __future__ import annotations

import sys

from statefulmcp import Stateful, component, tool


@component(per_session=True)
class Tally(Stateful):
    """A running total per conversation, durable between its calls."""

    async def on_deactivate(self) -> None:
        print(f"tally on_deactivate at {self.state.get('total', 0)}", file=sys.stderr, flush=True)

    @tool
    async def add(self, by: int) -> int:
        """Add `by` to this conversation's total; returns the new total."""
        total: int = self.state.get("total", 0) + by
        self.state["total"] = total
        return total

    @tool
    def arguments(self, text: str) -> list[str]:
        """The names of the arguments this body received (the host's own argument is not one)."""
        return sorted(locals())
