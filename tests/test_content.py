"""Tools answer with images, audio, embedded resources and mixed content, through a real server.

The helpers are the SDK's own `Image` and `Audio` (exported by statefulmcp); a list mixes them
with text, JSON values and the SDK's content blocks, in order.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from conftest import COMPONENTS, error, http_session, running, stdio_session
from mcp.types import AudioContent, EmbeddedResource, ImageContent, TextContent, TextResourceContents

pytestmark = pytest.mark.anyio

MEDIA = COMPONENTS / "media.py"
PIXEL = bytes.fromhex("89504e470d0a1a0a")


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_a_stateful_tool_answers_with_images_audio_and_resources_in_order(
    tmp_path: Path, mode: str
) -> None:
    with running(MEDIA, tmp=tmp_path) as server:
        async with http_session(server.url, mode) as session:
            await session.call_tool("gallery_add", {"hex_bytes": PIXEL.hex()})
            await session.call_tool("gallery_add", {"hex_bytes": "ff00"})
            latest = await session.call_tool("gallery_latest", {})
            assert not latest.is_error
            assert latest.content == [
                ImageContent(type="image", data=base64.b64encode(b"\xff\x00").decode(), mime_type="image/png")
            ]
            album = await session.call_tool("gallery_album", {})
    assert not album.is_error
    kinds = [type(block) for block in album.content]
    assert kinds == [TextContent, ImageContent, ImageContent, AudioContent, EmbeddedResource]
    first, second = album.content[1], album.content[2]
    assert isinstance(first, ImageContent) and base64.b64decode(first.data) == PIXEL
    assert isinstance(second, ImageContent) and base64.b64decode(second.data) == b"\xff\x00"
    chime = album.content[3]
    assert isinstance(chime, AudioContent) and chime.mime_type == "audio/wav"
    embedded = album.content[4]
    assert isinstance(embedded, EmbeddedResource)
    assert isinstance(embedded.resource, TextResourceContents) and embedded.resource.text == "2 pictures"


async def test_a_stateless_tool_sends_a_file_as_an_image_over_stdio(tmp_path: Path) -> None:
    picture = tmp_path / "dot.png"
    picture.write_bytes(PIXEL)
    async with stdio_session(MEDIA, cwd=tmp_path) as session:
        result = await session.call_tool("files_picture", {"path": str(picture)})
        assert not result.is_error
        (block,) = result.content
        assert isinstance(block, ImageContent) and block.mime_type == "image/png"
        assert base64.b64decode(block.data) == PIXEL
        refused = await session.call_tool("files_unsendable", {})
        assert "not JSON-serializable" in error(refused)
        # The server stays up and serves the next call.
        again = await session.call_tool("files_picture", {"path": str(picture)})
        assert not again.is_error
