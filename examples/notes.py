"""A component with handles: per-conversation notes for clients that have no session."""

from statefulmcp import component, tool


@component(stateful=True, key="session", handles=True)
class Notes:
    """Call `notes_open` for a handle, pass it as `session`, and `notes_close` it when done."""

    @tool
    async def add(self, session: str, text: str) -> int:
        """Append a note; returns how many notes this conversation has."""
        notes = [*self.state.get("notes", []), text]  # a new list: the old one stays as committed
        self.state["notes"] = notes
        return len(notes)

    @tool
    async def list(self, session: str) -> list[str]:
        """Every note of this conversation, oldest first."""
        return list(self.state.get("notes", []))
