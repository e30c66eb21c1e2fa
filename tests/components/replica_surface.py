"""A keyed component for the replica surface tests: a tool that tells its caller how it is doing,
and a prompt and a resource that read what only the owner's memory holds (and its pid)."""

from __future__ import annotations

import os

from statefulmcp import Context, Stateful, component, prompt, resource, tool


@component(stateful=True, key="key", durability="memory")
class Desk(Stateful):
    """Notes kept in memory only, per key: a replica that does not own the key has none."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    @tool
    async def note(self, key: str, text: str) -> int:
        """Keeps a note in memory; returns this process's pid."""
        self.notes.append(text)
        return os.getpid()

    @tool
    async def count_to(self, key: str, n: int, ctx: Context) -> int:
        """Counts to n, logging each step at three levels and reporting it as progress."""
        await ctx.log("debug", "starting")
        for step in range(1, n + 1):
            await ctx.report_progress(step, n, f"step {step}")
            await ctx.log("info", f"step {step}")
        await ctx.log("warning", {"done": n}, logger="desk")
        return n

    @tool
    async def wait_for(self, key: str, n: int) -> int:
        """A long-poll that says nothing itself: answers once the key has `n` notes."""
        await self.wait_until(lambda: len(self.notes) >= n, timeout=120)
        return len(self.notes)

    @prompt
    async def recall(self, key: str, ctx: Context) -> str:
        """The notes of a key, from the memory of the process that runs it."""
        await ctx.log("info", f"recalling {key}")
        return f"pid {os.getpid()}: {'; '.join(self.notes)}"

    @prompt
    def broken(self, key: str) -> str:
        """Always fails."""
        raise RuntimeError(f"no notes for {key} today")

    @resource("desk://{key}/notes")
    def notes_of(self, key: str) -> str:
        """The notes of a key, from the memory of the process that runs it."""
        return f"pid {os.getpid()}: {'; '.join(self.notes)}"


@component(per_session=True, durability="memory")
class Pad:
    """A running total per MCP session, in memory only, with a resource that reads it."""

    def __init__(self) -> None:
        self.total = 0

    @tool
    async def add(self, by: int) -> int:
        """Adds `by` to this session's total."""
        self.total += by
        return self.total

    @resource("pad://total")
    def total_now(self) -> str:
        """This session's total, from the memory of the process that runs it."""
        return f"pid {os.getpid()}: {self.total}"
