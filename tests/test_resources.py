"""`@resource` methods and functions are served as MCP resources: a URI without placeholders is
listed by `resources/list`, one with `{param}`s by `resources/templates/list`; `resources/read`
runs the method as a tool runs (a turn of the instance, for a stateful component)."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from conftest import COMPONENTS, Notified, http_session, running, stdio_session, value
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    BlobResourceContents,
    ResourceListChangedNotification,
    ResourceUpdatedNotification,
    TextResourceContents,
)

from statefulmcp import ComponentError, Host, component, resource, tool

pytestmark = pytest.mark.anyio

RESOURCEFUL = COMPONENTS / "resourceful.py"


async def test_static_resources_and_templates_are_listed_apart(tmp_path: Path) -> None:
    with running(RESOURCEFUL, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            resources = {r.uri: r for r in (await session.list_resources()).resources}
            templates = {
                t.uri_template: t for t in (await session.list_resource_templates()).resource_templates
            }
    assert set(resources) == {"shelf://titles", "shelf://broken", "shelf://wrong", "files://logo.bin"}
    assert resources["shelf://titles"].name == "titles"
    assert resources["shelf://titles"].description == "The titles on the shelf."
    assert resources["shelf://titles"].mime_type == "application/json"
    assert (resources["files://logo.bin"].name, resources["files://logo.bin"].description) == (
        "logo",
        "Four bytes of a logo.",
    )
    assert set(templates) == {"shelf://book/{title}", "files://{folder}/{name}"}
    assert templates["files://{folder}/{name}"].description == "A text and a blob for a path."


async def test_reading_text_binary_and_templated_resources(tmp_path: Path) -> None:
    with running(RESOURCEFUL, tmp=tmp_path) as server:
        async with http_session(server.url, "modern") as session:
            logo = (await session.read_resource("files://logo.bin")).contents
            files = (await session.read_resource("files://docs/read%20me.md")).contents
    assert logo == [
        BlobResourceContents(
            uri="files://logo.bin",
            mime_type="application/octet-stream",
            blob=base64.b64encode(b"\x89PNG").decode(),
        )
    ]
    assert isinstance(files[0], TextResourceContents) and files[0].text == "# read me.md in docs"
    assert files[0].mime_type == "text/markdown"
    assert isinstance(files[1], BlobResourceContents) and files[1].blob == "AAEC"


async def test_a_stateful_resource_reads_what_the_tools_wrote(tmp_path: Path) -> None:
    with running(RESOURCEFUL, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("shelf_put", {"title": "dune", "text": "Arrakis"})
            assert value(await session.call_tool("shelf_put", {"title": "emma", "text": "Highbury"})) == 2
            titles = (await session.read_resource("shelf://titles")).contents
            book = (await session.read_resource("shelf://book/dune")).contents
    assert titles == [
        TextResourceContents(uri="shelf://titles", mime_type="application/json", text="dune,emma")
    ]
    assert book == [TextResourceContents(uri="shelf://book/dune", mime_type="text/plain", text="Arrakis")]


async def test_bad_reads_get_errors_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with running(RESOURCEFUL, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            with pytest.raises(
                MCPError, match=r"resource 'shelf://nothing' not found; list the resources"
            ) as unknown:
                await session.read_resource("shelf://nothing")
            assert unknown.value.error.code == INVALID_PARAMS
            assert unknown.value.error.data == {"uri": "shelf://nothing"}
            with pytest.raises(MCPError, match="RuntimeError: the shelf fell") as failed:
                await session.read_resource("shelf://broken")
            assert failed.value.error.code == INTERNAL_ERROR
            with pytest.raises(MCPError, match="resource 'wrong' returned int"):
                await session.read_resource("shelf://wrong")
            assert value(await session.call_tool("shelf_put", {"title": "still", "text": "here"})) == 1


@pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")
async def test_subscribers_hear_a_singletons_resources_change_until_they_unsubscribe(tmp_path: Path) -> None:
    heard: list[str] = []
    changed = Notified(ResourceUpdatedNotification)

    async def handler(message: object) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            heard.append(message.params.uri)
        await changed(message)

    with running(RESOURCEFUL, tmp=tmp_path) as server:
        async with http_session(server.url, message_handler=handler) as session:
            await session.subscribe_resource("shelf://titles")
            await session.call_tool("shelf_put", {"title": "dune", "text": "Arrakis"})
            await changed.next()
            assert heard == ["shelf://titles"]
            titles = (await session.read_resource("shelf://titles")).contents[0]
            assert isinstance(titles, TextResourceContents) and titles.text == "dune"
            await session.unsubscribe_resource("shelf://titles")
            await session.unsubscribe_resource("shelf://never-subscribed")
            await session.subscribe_resource("shelf://broken")
            await session.call_tool("shelf_put", {"title": "emma", "text": "Highbury"})
            await changed.next()
            assert heard == ["shelf://titles", "shelf://broken"]


async def test_resources_work_over_stdio(tmp_path: Path) -> None:
    async with stdio_session(RESOURCEFUL, cwd=tmp_path) as session:
        got = (await session.read_resource("files://a/b")).contents
    assert isinstance(got[0], TextResourceContents) and got[0].text == "# b in a"


async def test_clients_hear_when_resources_come_and_go(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(RESOURCEFUL, allowed / "resourceful.py")
    changed = Notified(ResourceListChangedNotification)

    with running("--allow-load", allowed, tmp=tmp_path) as server:
        async with http_session(server.url, message_handler=changed) as session:
            assert (await session.list_resources()).resources == []
            await session.call_tool("load_component", {"path": "resourceful.py"})
            await changed.next()
            assert "files://logo.bin" in {r.uri for r in (await session.list_resources()).resources}
            await session.call_tool("unload_component", {"name": "resourceful"})
            await changed.next()
            assert "files://logo.bin" not in {r.uri for r in (await session.list_resources()).resources}


async def test_a_resource_reads_in_process_through_the_host() -> None:
    async with Host() as host:
        await host.load(RESOURCEFUL)
        result = await host.read_resource("files://x/y")
    assert result.contents[0].uri == "files://x/y"


async def test_bad_declarations_refuse_the_load() -> None:
    @component
    class NoParameter:
        @resource("data://{id}")
        def read(self) -> str:
            return ""

    @component
    class ExtraParameter:
        @resource("data://static")
        def read(self, id: str) -> str:
            return id

    @component
    class First:
        @resource("data://same")
        def read(self) -> str:
            return "first"

    @component
    class Second:
        @resource("data://same")
        def read(self) -> str:
            return "second"

    @component(stateful=True, key="user")
    class Keyed:
        @tool
        def hello(self, user: str) -> str:
            return user

        @resource("data://static")
        def read(self) -> str:
            return ""

    async with Host() as host:
        with pytest.raises(ComponentError, match=r"the URI's 'id' is no parameter of it"):
            await host.load(NoParameter)
        with pytest.raises(ComponentError, match=r"its parameters 'id' are not placeholders of the URI"):
            await host.load(ExtraParameter)
        with pytest.raises(ComponentError, match=r"keyed by 'user'.*\{user\} placeholder"):
            await host.load(Keyed)
        await host.load(First)
        with pytest.raises(ComponentError, match=r"'data://same' of component 'second' is already served by"):
            await host.load(Second)
        assert (await host.read_resource("data://same")).contents[0].text == "first"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("no-scheme", "needs a URI with a scheme"),
        ("data://{+path}", "only simple {name} placeholders"),
        ("data://{a}/{a}", "names a placeholder twice"),
    ],
)
def test_malformed_uris_are_refused_at_declaration(uri: str, problem: str) -> None:
    with pytest.raises(ComponentError, match=problem.replace("{", r"\{").replace("}", r"\}")):
        resource(uri)
