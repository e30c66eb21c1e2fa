"""Resources: static and templated, text and binary, on a stateful class (reading its durable
state) and on module functions."""

from __future__ import annotations

from mcp.types import BlobResourceContents, TextResourceContents

from statefulmcp import Stateful, component, resource, tool


@component(stateful=True)
class Shelf(Stateful):
    """A stateful component whose resources read what its tools wrote to `self.state`."""

    @tool
    def put(self, title: str, text: str) -> int:
        """Shelves a text under a title."""
        self.state[title] = text
        return len(self.state)

    @resource("shelf://titles", mime_type="application/json")
    def titles(self) -> str:
        """The titles on the shelf."""
        return ",".join(sorted(self.state))

    @resource("shelf://book/{title}")
    def book(self, title: str) -> str:
        """The text shelved under a title."""
        return str(self.state.get(title, ""))

    @resource("shelf://broken")
    def broken(self) -> str:
        """Always fails."""
        raise RuntimeError("the shelf fell")

    @resource("shelf://wrong")
    def wrong(self) -> int:
        """Returns what is not a resource's contents."""
        return 3


@resource("files://logo.bin", name="logo", description="Four bytes of a logo.")
def logo() -> bytes:
    return b"\x89PNG"


@resource("files://{folder}/{name}")
def file(folder: str, name: str) -> list[TextResourceContents | BlobResourceContents]:
    """A text and a blob for a path."""
    uri = f"files://{folder}/{name}"
    return [
        TextResourceContents(uri=uri, mime_type="text/markdown", text=f"# {name} in {folder}"),
        BlobResourceContents(uri=uri, mime_type="image/png", blob="AAEC"),
    ]
