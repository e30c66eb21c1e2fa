"""A component with handles: per-conversation notes for clients that have no session."""

from statefulmcp import component, tool


@component(stateful=True, key="session", handles=True)
class Notes:
    """Call `notes_open` for a handle, pass it as `session`, and `notes_close` it when done."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    async def on_activate(self) -> None:
        self.notes = list(self.state.get("notes", []))

    @tool
    async def add(self, session: str, text: str) -> int:
        """Append a note; returns how many notes this conversation has."""
        self.notes.append(text)
        self.state["notes"] = self.notes
        return len(self.notes)

    @tool
    async def list(self, session: str) -> list[str]:
        """Every note of this conversation, oldest first."""
        return self.notes
