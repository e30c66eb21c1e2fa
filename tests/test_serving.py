"""Serving over HTTP (both protocol eras) and stdio, through the official MCP client."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2 as httpx
import pytest
from conftest import (
    COMPONENTS,
    EXAMPLES,
    Notified,
    ServerProcess,
    error,
    http_session,
    running,
    stdio_session,
    value,
)
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.types import ToolListChangedNotification

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(EXAMPLES, COMPONENTS / "probe.py", tmp=tmp_path_factory.mktemp("srv")) as server:
        yield server


@pytest.mark.parametrize("mode", ["legacy", "modern"])
async def test_http_lists_and_calls_stateless_and_stateful_tools(
    examples_server: ServerProcess, mode: str
) -> None:
    async with http_session(examples_server.url, mode) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert {"counter_increment", "ticker_add", "notes_open", "notes_close", "text_word_count"} <= names
        assert "load_component" not in names  # run-time loading is off unless --allow-load
        assert value(await session.call_tool("text_word_count", {"text": "one two three"})) == 3
        assert (
            value(await session.call_tool("text_slugify", {"text": "Hello Big World"})) == "hello-big-world"
        )
        first = value(await session.call_tool("counter_increment", {"by": 5}))
        assert value(await session.call_tool("counter_increment", {})) == first + 1


async def test_input_and_output_schemas_come_from_type_hints(examples_server: ServerProcess) -> None:
    async with http_session(examples_server.url) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        add = tools["ticker_add"]
        assert add.input_schema["properties"]["price"]["type"] == "number"
        assert set(add.input_schema["required"]) == {"symbol", "price"}
        assert (add.description or "").startswith("Record a price")
        assert tools["counter_increment"].input_schema["properties"]["by"]["default"] == 1
        assert tools["ticker_stats"].output_schema is not None


async def test_stdio_lists_and_calls_tools(tmp_path: Path) -> None:
    async with stdio_session(EXAMPLES, cwd=tmp_path) as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert "counter_increment" in names
        assert value(await session.call_tool("counter_increment", {"by": 2})) == 2
        assert value(await session.call_tool("counter_increment", {"by": 2})) == 4
        assert value(await session.call_tool("text_word_count", {"text": "a b"})) == 2


@pytest.mark.parametrize("tool", ["tally_increment", "tally_sync_increment"])
async def test_200_concurrent_calls_to_one_instance_never_interleave(tmp_path: Path, tool: str) -> None:
    with running(COMPONENTS / "probe.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            results: list[int] = []

            async def one() -> None:
                results.append(value(await session.call_tool(tool, {})))

            async with anyio.create_task_group() as tg:
                for _ in range(200):
                    tg.start_soon(one)
            assert sorted(results) == list(range(1, 201))
            assert value(await session.call_tool("tally_overlaps_seen", {})) == 0


async def test_stateless_component_gets_a_fresh_instance_per_call(examples_server: ServerProcess) -> None:
    async with http_session(examples_server.url) as session:
        assert [value(await session.call_tool("fresh_bump", {})) for _ in range(3)] == [1, 1, 1]


async def test_key_values_get_isolated_instances(examples_server: ServerProcess) -> None:
    async with http_session(examples_server.url) as session:
        assert value(await session.call_tool("room_post", {"room": "a", "message": "hi"})) == ["hi"]
        assert value(await session.call_tool("room_post", {"room": "b", "message": "yo"})) == ["yo"]
        assert value(await session.call_tool("room_post", {"room": "a", "message": "again"})) == [
            "hi",
            "again",
        ]


async def test_handles_open_use_close_and_unknown_handles_are_refused(examples_server: ServerProcess) -> None:
    async with http_session(examples_server.url, "modern") as session:
        handle = value(await session.call_tool("notes_open", {}))
        other = value(await session.call_tool("notes_open", {}))
        assert isinstance(handle, str) and len(handle) >= 22 and handle != other
        assert value(await session.call_tool("notes_add", {"session": handle, "text": "first"})) == 1
        assert value(await session.call_tool("notes_add", {"session": handle, "text": "second"})) == 2
        assert value(await session.call_tool("notes_list", {"session": other})) == []
        assert value(await session.call_tool("notes_close", {"session": handle})) is True
        closed = error(await session.call_tool("notes_list", {"session": handle}))
        assert "unknown or closed handle" in closed
        made_up = error(await session.call_tool("notes_add", {"session": "guessed", "text": "x"}))
        assert "unknown or closed handle" in made_up and "notes_open" in made_up


async def test_bad_calls_get_clear_errors_and_the_server_stays_up(examples_server: ServerProcess) -> None:
    async with http_session(examples_server.url) as session:
        with pytest.raises(MCPError, match="unknown tool 'nope'"):
            await session.call_tool("nope", {})
        wrong = error(await session.call_tool("ticker_add", {"symbol": "X", "price": "cheap"}))
        assert "ticker_add" in wrong and "price" in wrong
        missing = error(await session.call_tool("ticker_add", {"symbol": "X"}))
        assert "price" in missing and "required" in missing.lower()
        raised = error(await session.call_tool("tally_fail", {"message": "the disk is on fire"}))
        assert "the disk is on fire" in raised
        before = value(await session.call_tool("tally_increment", {}))
        assert value(await session.call_tool("tally_increment", {})) == before + 1  # still usable
        unserializable = error(await session.call_tool("tally_unserializable", {}))
        assert "not JSON-serializable" in unserializable
    assert httpx.get(f"{examples_server.base}/health").status_code == 200
    assert httpx.get(f"{examples_server.base}/ready").status_code == 200


@pytest.fixture
def loadable(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("probe.py", "broken_syntax.py", "broken_import.py", "empty.py", "bad_key.py", "clash.py"):
        shutil.copy(COMPONENTS / name, allowed / name)
    shutil.copy(EXAMPLES / "counter.py", allowed / "counter.py")
    (tmp_path / "outside.py").write_text((EXAMPLES / "text.py").read_text())
    return allowed


async def test_load_call_unload_reload_notifies_and_starts_fresh(tmp_path: Path, loadable: Path) -> None:
    notified = Notified(ToolListChangedNotification)

    with running("--allow-load", loadable, tmp=tmp_path) as server:
        async with (
            http_session(server.url, message_handler=notified) as session,
            http_session(server.url, "modern") as modern,
            listen(modern, tools_list_changed=True) as subscription,
        ):
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"list_components", "load_component", "unload_component"} <= names
            assert "counter_increment" not in names

            loaded = await session.call_tool("load_component", {"path": "counter.py", "durability": "memory"})
            assert value(loaded)["components"] == ["counter"]
            await notified.next()
            with anyio.fail_after(10):
                await subscription.__anext__()
            assert value(await session.call_tool("counter_increment", {"by": 3})) == 3
            assert value(await session.call_tool("counter_increment", {"by": 3})) == 6
            listed = value(await session.call_tool("list_components", {}))["components"]
            (counter,) = [c for c in listed if c["name"] == "counter"]
            assert counter["stateful"] is True and counter["instances"] == 1
            assert set(counter["tools"]) == {"counter_increment", "counter_get"}

            assert (
                value(await session.call_tool("unload_component", {"name": "counter"}))["unloaded"]
                == "counter"
            )
            await notified.next()
            with anyio.fail_after(10):
                await subscription.__anext__()
            assert "counter_increment" not in {t.name for t in (await session.list_tools()).tools}
            with pytest.raises(MCPError, match="unknown tool"):
                await session.call_tool("counter_increment", {})

            await session.call_tool("load_component", {"path": "counter.py", "durability": "memory"})
            assert value(await session.call_tool("counter_increment", {"by": 1})) == 1  # fresh


async def test_run_time_load_refuses_bad_components_and_changes_nothing(
    tmp_path: Path, loadable: Path
) -> None:
    with running("--allow-load", loadable, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "probe.py"})
            assert value(await session.call_tool("tally_increment", {})) == 1

            syntax = error(await session.call_tool("load_component", {"path": "broken_syntax.py"}))
            assert "broken_syntax.py" in syntax and "syntax error" in syntax
            imp = error(await session.call_tool("load_component", {"path": "broken_import.py"}))
            assert "broken_import.py" in imp and "statefulmcp_no_such_module" in imp
            empty = error(await session.call_tool("load_component", {"path": "empty.py"}))
            assert "no components" in empty
            key = error(await session.call_tool("load_component", {"path": "bad_key.py"}))
            assert "'room'" in key and "say" in key
            outside = error(await session.call_tool("load_component", {"path": "../outside.py"}))
            assert "outside the allowed directory" in outside
            clash = error(await session.call_tool("load_component", {"path": "clash.py"}))
            assert "tally_sync_increment" in clash and "already served" in clash
            missing = error(await session.call_tool("load_component", {"path": "nope.py"}))
            assert "no such file" in missing

            assert value(await session.call_tool("tally_increment", {})) == 2  # untouched
            names = {c["name"] for c in value(await session.call_tool("list_components", {}))["components"]}
            assert names == {"tally", "room", "fresh"}


async def test_loading_a_key_the_tools_do_not_take_is_refused(tmp_path: Path, loadable: Path) -> None:
    with running("--allow-load", loadable, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            refused = error(
                await session.call_tool(
                    "load_component", {"path": "counter.py", "stateful": True, "key": "user"}
                )
            )
            assert "'user'" in refused and "increment" in refused
            ok = await session.call_tool("load_component", {"path": "counter.py", "stateful": False})
            assert not ok.is_error
            # Now stateless: a write to self.state would be lost, so it is an error, not a silent drop.
            assert "stateless" in error(await session.call_tool("counter_increment", {}))
            assert value(await session.call_tool("counter_get", {})) == 0


def test_a_component_file_that_fails_to_import_stops_start_up_with_its_name(tmp_path: Path) -> None:
    from conftest import start_server

    server = start_server(COMPONENTS / "broken_syntax.py", tmp=tmp_path, wait=False)
    assert server.proc.wait(30) == 2
    assert "broken_syntax.py" in server.log() and "syntax error" in server.log()
