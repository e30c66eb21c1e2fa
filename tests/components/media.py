"""Tools that answer with more than text: images, audio, embedded resources and mixtures."""

from __future__ import annotations

from pathlib import Path

from mcp.types import EmbeddedResource, TextResourceContents

from statefulmcp import Audio, Image, component, tool

PIXEL = bytes.fromhex("89504e470d0a1a0a")
"""The PNG signature: enough bytes for a client to tell an image arrived intact."""


@component(stateful=True)
class Gallery:
    """A stateful gallery whose pictures are bytes it keeps between calls."""

    def __init__(self) -> None:
        self.pictures: list[bytes] = []

    @tool
    def add(self, hex_bytes: str) -> int:
        """Keeps a picture (given as hex) and says how many there are."""
        self.pictures.append(bytes.fromhex(hex_bytes))
        return len(self.pictures)

    @tool
    def latest(self) -> Image:
        """The last picture added, as a PNG image."""
        return Image(data=self.pictures[-1], format="png")

    @tool
    def album(self) -> list[str | Image | Audio | EmbeddedResource]:
        """A caption, every picture, a chime and the album's index as an embedded resource."""
        index = TextResourceContents(
            uri="gallery://index", mime_type="text/plain", text=f"{len(self.pictures)} pictures"
        )
        return [
            f"{len(self.pictures)} pictures",
            *(Image(data=picture, format="png") for picture in self.pictures),
            Audio(data=b"RIFF", format="wav"),
            EmbeddedResource(type="resource", resource=index),
        ]


@component
class Files:
    """A stateless tool that sends a file from disk as an image."""

    @tool
    def picture(self, path: str) -> Image:
        """The PNG at `path` (the format comes from its suffix)."""
        return Image(path=Path(path))

    @tool
    def unsendable(self) -> object:
        """Returns what no client could read: neither JSON nor media."""
        return object()
