"""Prompts: on a stateful class (reading its instance), with typed arguments, and on module functions."""

from __future__ import annotations

from typing import Annotated

from mcp.types import PromptMessage, TextContent
from pydantic import Field

from statefulmcp import component, prompt, tool


@component(stateful=True)
class Desk:
    """A stateful component whose prompt reads what its tools wrote."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    @tool
    def note(self, text: str) -> int:
        """Keeps a note."""
        self.notes.append(text)
        return len(self.notes)

    @prompt
    def review(
        self, tone: Annotated[str, Field(description="how to sound")], limit: int = 10
    ) -> list[PromptMessage | str]:
        """Asks for a review of the notes kept so far."""
        return [
            PromptMessage(
                role="assistant", content=TextContent(type="text", text=f"I keep {len(self.notes)} notes.")
            ),
            f"Review them {tone}: {'; '.join(self.notes[:limit])}",
        ]

    @prompt(name="broken")
    def fails(self) -> str:
        """Always fails."""
        raise RuntimeError("no review today")

    @prompt
    def wrong(self) -> int:
        """Returns what is not a message."""
        return 3


NAMES = ("Ada", "Alan", "Barbara")


async def names_starting(typed: str) -> list[str]:
    return [name for name in NAMES if name.lower().startswith(typed.lower())]


def failing_hook(typed: str) -> list[str]:
    raise LookupError(f"nothing for {typed!r}")


@prompt(complete={"name": names_starting, "style": failing_hook})
def greet(name: str, style: str = "warm") -> str:
    """Greets someone by name."""
    return f"Say hello to {name}."
