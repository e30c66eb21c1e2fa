"""Per-session instances (`per_session=True`): one instance per MCP session for components whose
tools take no key, through real servers and the official client over HTTP (both eras) and stdio.

Waits are on conditions (a log line, a stored row gone, an instance count), never on sleeps.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import wasmtime
from conftest import (
    COMPONENTS,
    INITIALIZE,
    POST_HEADERS,
    error,
    http_session,
    running,
    stdio_session,
    text,
    value,
)
from mcp import ClientSession
from wasm_components.build import notes_component

from statefulmcp import ComponentError, Host, LoadOptions, Stateful, ToolCallError, component, tool
from statefulmcp.per_session import SESSION_ARGUMENT, session_key

pytestmark = pytest.mark.anyio

TALLY = COMPONENTS / "per_session_tally.py"
WAT = Path(__file__).parent / "wasm_components"


async def until(condition: Callable[[], Awaitable[bool]], what: str, seconds: float = 30.0) -> None:
    """Wait until `condition()` holds (polled; the bound only turns a hang into a failure)."""
    async with asyncio.timeout(seconds):
        while not await condition():
            await asyncio.sleep(0.02)
    assert await condition(), what


def stored_keys(db: Path, component: str) -> set[str]:
    """The keys with durable state, read from the server's store beside it (read-only)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT DISTINCT key FROM state WHERE component = ?", (component,)).fetchall()
    return {key for (key,) in rows}


async def instances(session: ClientSession, name: str) -> int:
    listed = (await session.call_tool("list_components", {})).structured_content
    assert listed is not None
    components = listed if isinstance(listed, list) else listed["components"]
    (info,) = [c for c in components if c["name"] == name]
    count: int = info["instances"]
    return count


async def add(session: ClientSession, by: int, **extra: Any) -> int:
    total: int = value(await session.call_tool("tally_add", {"by": by, **extra}))
    return total


async def test_two_legacy_http_sessions_get_separate_instances(tmp_path: Path) -> None:
    with running(TALLY, tmp=tmp_path) as server:
        async with http_session(server.url) as first, http_session(server.url) as second:
            assert await add(first, 1) == 1
            assert await add(first, 2) == 3
            assert await add(second, 10) == 10
            assert await add(first, 1) == 4, "the other session's calls never reach this instance"
            assert await instances(first, "tally") == 2
            listed = (await first.call_tool("list_components", {})).structured_content
            assert listed is not None
            (info,) = [c for c in listed["components"] if c["name"] == "tally"]
            assert info["per_session"] is True and info["stateful"] is True


async def test_a_sessionless_client_opens_a_handle_and_passes_it(tmp_path: Path) -> None:
    with running(TALLY, tmp=tmp_path) as server:
        async with http_session(server.url, "modern") as session:
            refused = error(await session.call_tool("tally_add", {"by": 1}))
            assert "tally_open" in refused and SESSION_ARGUMENT in refused, refused
            mine = value(await session.call_tool("tally_open", {}))
            other = value(await session.call_tool("tally_open", {}))
            assert isinstance(mine, str) and len(mine) == 32 and mine != other
            assert await add(session, 2, statefulmcp_session=mine) == 2
            assert await add(session, 3, statefulmcp_session=mine) == 5
            assert await add(session, 7, statefulmcp_session=other) == 7
            unknown = error(await session.call_tool("tally_add", {"by": 1, SESSION_ARGUMENT: "made-up"}))
            assert "unknown or closed handle" in unknown and "tally_open" in unknown
            forged = session_key("a guess at someone's session id")
            assert "only a replica forwarding a call may name a session's key" in error(
                await session.call_tool("tally_add", {"by": 1, SESSION_ARGUMENT: forged})
            ), "a derived session key is never accepted from a client"
            assert value(await session.call_tool("tally_close", {SESSION_ARGUMENT: mine})) is True
            closed = error(await session.call_tool("tally_add", {"by": 1, SESSION_ARGUMENT: mine}))
            assert "unknown or closed handle" in closed


async def test_the_added_argument_is_listed_and_the_tool_never_sees_it(tmp_path: Path) -> None:
    with running(TALLY, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert {"tally_add", "tally_arguments", "tally_open", "tally_close"} <= set(tools)
            for name in ("tally_add", "tally_arguments"):
                schema = tools[name].input_schema
                assert schema["properties"][SESSION_ARGUMENT]["type"] == "string"
                assert SESSION_ARGUMENT not in schema.get("required", [])
                assert schema["additionalProperties"] is False, "the tool's own schema is kept"
            handle = value(await session.call_tool("tally_open", {}))
            assert value(await session.call_tool("tally_arguments", {"text": "x"})) == ["self", "text"]
            passed = {"text": "x", SESSION_ARGUMENT: handle}
            assert value(await session.call_tool("tally_arguments", passed)) == ["self", "text"]
            extra = error(await session.call_tool("tally_arguments", {"text": "x", "other": 1}))
            assert "other" in extra, "the tool's own validation still refuses unknown arguments"


async def test_a_conversation_moves_from_a_session_to_sessionless_with_its_handle(tmp_path: Path) -> None:
    with running(TALLY, tmp=tmp_path) as server:
        async with http_session(server.url) as legacy:
            assert await add(legacy, 1) == 1
            handle = value(await legacy.call_tool("tally_open", {}))
            assert await add(legacy, 5, statefulmcp_session=handle) == 5, "a passed handle wins"
            assert await add(legacy, 1) == 2, "without it, the session's own instance"
        async with http_session(server.url, "modern") as modern:
            assert await add(modern, 1, statefulmcp_session=handle) == 6


async def test_ending_a_session_drops_its_instance_and_deletes_its_state(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    with running(TALLY, "--state", db, tmp=tmp_path) as server:
        async with http_session(server.url) as staying:
            async with http_session(server.url) as leaving:
                assert await add(leaving, 41) == 41
                assert await add(staying, 1) == 1
                assert len(stored_keys(db, "tally")) == 2
            # Leaving the client's context sends the session's DELETE.

            async def dropped() -> bool:
                return await instances(staying, "tally") == 1 and len(stored_keys(db, "tally")) == 1

            await until(dropped, "the ended session's instance and its durable state are gone")
            assert "tally on_deactivate at 41" in server.log(), "passivated: on_deactivate ran first"
            assert await add(staying, 1) == 2, "the other session is untouched"


async def test_a_session_evicted_by_the_per_client_cap_loses_its_instance(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    args = (TALLY, "--state", db, "--max-sessions-per-client", "1")
    with running(*args, tmp=tmp_path) as server:
        # A raw session, left idle after one call (the SDK's client would hold a GET stream open,
        # and a busy session is never evicted); it skips `notifications/initialized` on purpose.
        opened = httpx.post(server.url, json=INITIALIZE, headers=POST_HEADERS, timeout=30)
        session = {"mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "tally_add", "arguments": {"by": 3}},
        }
        answer = httpx.post(server.url, json=call, headers={**POST_HEADERS, **session}, timeout=30)
        assert answer.status_code == 200 and '"structuredContent":{"result":3}' in answer.text.replace(
            " ", ""
        )
        assert len(stored_keys(db, "tally")) == 1
        async with http_session(server.url) as second:  # closes the idle one to make room

            async def evicted() -> bool:
                return await instances(second, "tally") == 0 and not stored_keys(db, "tally")

            await until(evicted, "the evicted session's instance and state are gone")
            assert "tally on_deactivate at 3" in server.log()
            assert await add(second, 1) == 1


async def test_instances_are_bounded_and_a_passivated_session_comes_back_from_the_store(
    tmp_path: Path,
) -> None:
    with running(TALLY, "--max-instances", "1", tmp=tmp_path) as server:
        async with http_session(server.url) as first, http_session(server.url) as second:
            assert await add(first, 5) == 5
            assert await add(second, 1) == 1  # past the bound: `first`'s idle instance is passivated

            async def one_live() -> bool:
                return await instances(first, "tally") == 1

            await until(one_live, "at most one live instance")
            assert await add(first, 1) == 6, "activated again from its durable state"


async def test_stdio_is_one_session(tmp_path: Path) -> None:
    async with stdio_session(TALLY, "--state", tmp_path / "state.db", cwd=tmp_path) as session:
        assert await add(session, 2) == 2
        assert await add(session, 3) == 5
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert SESSION_ARGUMENT in tools["tally_add"].input_schema["properties"]
        handle = value(await session.call_tool("tally_open", {}))
        assert await add(session, 1, statefulmcp_session=handle) == 1
        assert await add(session, 1) == 6


COUNTER_POLICY = "per_session = true\n"


async def test_an_unmodified_wasm_component_gets_one_instance_per_session(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    directory.mkdir()
    counter = directory / "counter.wasm"
    counter.write_bytes(wasmtime.wat2wasm((WAT / "counter.wat").read_text()))
    (directory / "counter.toml").write_text(COUNTER_POLICY)
    with running(counter, tmp=tmp_path) as server:
        async with http_session(server.url) as first, http_session(server.url) as second:

            async def bump(session: ClientSession, n: int, **extra: Any) -> int:
                # The component's own `session` parameter is an ordinary argument here: it
                # ignores it, and the instance is chosen by the MCP session.
                result: int = value(await session.call_tool("counter_add", {"session": "x", "n": n, **extra}))
                return result

            assert await bump(first, 2) == 2
            assert await bump(first, 3) == 5
            assert await bump(second, 1) == 1
            assert await bump(first, 1) == 6
            async with http_session(server.url, "modern") as modern:
                assert "counter_open" in error(
                    await modern.call_tool("counter_add", {"session": "x", "n": 1})
                )
                handle = value(await modern.call_tool("counter_open", {}))
                assert await bump(modern, 4, statefulmcp_session=handle) == 4
                assert await bump(modern, 4, statefulmcp_session=handle) == 8


@pytest.mark.slow
async def test_a_componentize_py_component_without_a_key_parameter_is_per_session(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    directory.mkdir()
    shutil.copy(notes_component(), directory / "notes.wasm")
    (directory / "notes.toml").write_text("per_session = true\n")
    with running(directory / "notes.wasm", tmp=tmp_path) as server:
        async with http_session(server.url) as first, http_session(server.url) as second:
            tools = {t.name: t for t in (await first.list_tools()).tools}
            assert set(tools["notes_list_notes"].input_schema["properties"]) == {SESSION_ARGUMENT}
            assert value(await first.call_tool("notes_add_note", {"text": "mine"})) == 1
            assert value(await second.call_tool("notes_add_note", {"text": "theirs"})) == 1
            assert value(await first.call_tool("notes_list_notes", {})) == ["mine"]
            assert value(await second.call_tool("notes_list_notes", {})) == ["theirs"]


# -- bad combinations ---------------------------------------------------------------------------


def test_per_session_with_a_key_or_handles_is_refused_where_it_is_written() -> None:
    with pytest.raises(ComponentError, match=r"per_session=true cannot be combined with key='room'"):
        component(per_session=True, key="room")
    with pytest.raises(ComponentError, match=r"per_session=true cannot be combined with handles=true"):
        LoadOptions(per_session=True, handles=True)
    with pytest.raises(ComponentError, match=r'activate="eager"'):
        LoadOptions(per_session=True, activate="eager")
    with pytest.raises(ComponentError, match=r"per_session=1 is not valid; use true or false"):
        LoadOptions(per_session=1)  # type: ignore[arg-type]
    with pytest.raises(ComponentError, match="cannot be combined with key='room'"):
        LoadOptions(per_session=True).over(LoadOptions(stateful=True, key="room"))


async def test_a_tool_with_its_own_session_argument_is_refused_at_load() -> None:
    @component(per_session=True)
    class Clash:
        @tool
        async def echo(self, statefulmcp_session: str) -> str:
            return statefulmcp_session

    async with Host() as host:
        with pytest.raises(ComponentError, match="already has one; rename that parameter"):
            await host.load(Clash)
        assert host.entry("clash_echo") is None


async def test_a_policy_or_load_component_that_combines_per_session_with_key_is_refused(
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    counter = allowed / "counter.wasm"
    counter.write_bytes(wasmtime.wat2wasm((WAT / "counter.wat").read_text()))
    shutil.copy(TALLY, allowed / "tally.py")
    with running("--allow-load", allowed, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            refused = error(
                await session.call_tool(
                    "load_component", {"path": "tally.py", "per_session": True, "handles": True}
                )
            )
            assert "cannot be combined with handles=true" in refused, refused
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert tools["load_component"].input_schema["properties"]["per_session"]["type"] == [
                "boolean",
                "null",
            ]
            loaded = await session.call_tool("load_component", {"path": "counter.wasm", "per_session": True})
            assert not loaded.is_error, text(loaded)
            assert value(await session.call_tool("counter_add", {"session": "x", "n": 2})) == 2
            (allowed / "counter.toml").write_text('per_session = true\nkey = "session"\n')
            refused = error(await session.call_tool("load_component", {"path": "counter.wasm"}))
            assert "counter.toml" in refused and "cannot be combined with key='session'" in refused, refused


# -- in process ---------------------------------------------------------------------------------


@component(per_session=True)
class Notebook(Stateful):
    @tool
    async def write(self, line: str) -> list[str]:
        lines = [*self.state.get("lines", []), line]
        self.state["lines"] = lines
        return lines


async def test_in_process_calls_name_their_session_and_a_session_key_is_honoured_only_when_forwarded() -> (
    None
):
    async with Host() as host:
        await host.load(Notebook)
        assert await host.call("notebook_write", {"line": "a"}, session="s1") == ["a"]
        assert await host.call("notebook_write", {"line": "b"}, session="s2") == ["b"]
        assert await host.call("notebook_write", {"line": "c"}, session="s1") == ["a", "c"]
        with pytest.raises(ToolCallError, match="notebook_open first"):
            await host.call("notebook_write", {"line": "x"})
        forged = {"line": "x", SESSION_ARGUMENT: session_key("s1")}
        refused = await host.call_result("notebook_write", forged)
        assert refused.is_error and "only a replica forwarding a call may name" in text(refused)
        # Marked as forwarded changes nothing without a replica's proof (test_replicas has one).
        forwarded = await host.call_result("notebook_write", forged, forwarded="replica-a")
        assert forwarded.is_error and "only a replica forwarding a call may name" in text(forwarded)
        await host.session_ended("s1")

        async def gone() -> bool:
            return next(i.instances for i in host.list() if i.name == "notebook") == 1

        await until(gone, "the ended session's instance is dropped")
        with pytest.raises(ToolCallError, match="session of this call ended"):
            await host.call("notebook_write", {"line": "late"}, session="s1")
