"""WebAssembly components served by a real `statefulmcp serve` process, through the MCP client."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import wasmtime
from conftest import error, http_session, running, start_server, text, value
from mcp.shared.exceptions import MCPError
from wasm_components.build import notes_component

WAT = Path(__file__).parent / "wasm_components"

pytestmark = pytest.mark.anyio


def install(directory: Path, wat: str, policy: str | None = None) -> Path:
    """Assemble a WAT test component into `directory/<wat>.wasm`, with its policy beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{wat}.wasm"
    path.write_bytes(wasmtime.wat2wasm((WAT / f"{wat}.wat").read_text()))
    if policy is not None:
        (directory / f"{wat}.toml").write_text(policy)
    return path


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"STATEFULMCP_CACHE_DIR": os.environ.get("STATEFULMCP_CACHE_DIR", str(tmp_path / "cache"))}


async def test_tools_and_schemas_are_listed_and_every_type_round_trips(
    tmp_path: Path, env: dict[str, str]
) -> None:
    types = install(tmp_path / "components", "types")
    with running(types, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert {"types_echo_u8", "types_make_point", "types_left_which", "types_right_which"} <= set(
                tools
            )
            assert tools["types_echo_u8"].input_schema["properties"]["x"] == {
                "type": "integer",
                "minimum": 0,
                "maximum": 255,
            }
            assert tools["types_make_point"].output_schema is not None
            point = {"x": 1, "y": -2, "label": "hé"}
            assert value(await session.call_tool("types_echo_record", {"x": point})) == point
            for name, arg in [
                ("echo_u64", 2**64 - 1),
                ("echo_char", "é"),
                ("echo_flags", ["write"]),
                ("echo_tuple", [1, "a", False]),
                ("echo_option", None),
                ("echo_variant", {"label": "v"}),
                ("echo_points", [point]),
                ("echo_bytes", [0, 255]),
            ]:
                assert value(await session.call_tool(f"types_{name}", {"x": arg})) == arg, name
            assert value(await session.call_tool("types_scale", {"x": 6, "factor": 7})) == 42
            failed = await session.call_tool("types_echo_result", {"x": {"err": "nope"}})
            assert failed.is_error and text(failed) == "nope"
            assert failed.structured_content == {"error": "nope"}
            refused = error(await session.call_tool("types_echo_u8", {"x": 300}))
            assert "field 'x': 300 is out of range for u8" in refused
            refused = error(await session.call_tool("types_echo_record", {"x": {**point, "y": "2"}}))
            assert "field 'x.y'" in refused


async def test_stateless_calls_see_fresh_memory(tmp_path: Path, env: dict[str, str]) -> None:
    counter = install(tmp_path / "components", "counter")
    with running(counter, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            for _ in range(2):
                assert value(await session.call_tool("counter_add", {"session": "a", "n": 5})) == 5


TRAP_POLICY = """
stateful = true
key = "session"

[limits]
deadline_seconds = 0.5
memory_mib = 8
"""


async def test_stateful_keys_keep_isolated_memory_and_survive_traps(
    tmp_path: Path, env: dict[str, str]
) -> None:
    counter = install(tmp_path / "components", "counter", TRAP_POLICY)
    with running(counter, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:

            async def add(key: str, n: int) -> int:
                result: int = value(await session.call_tool("counter_add", {"session": key, "n": n}))
                return result

            assert await add("a", 5) == 5
            assert await add("a", 2) == 7
            assert await add("b", 1) == 1
            for trap, cause in [
                ("counter_spin", "exceeded its deadline of 0.5 s"),
                ("counter_hog", "8 MiB memory cap"),
                ("counter_crash", "aborted"),
            ]:
                assert await add("a", 1) >= 1
                message = error(await session.call_tool(trap, {"session": "a"}))
                assert cause in message and "in-memory state was lost" in message, message
                assert "cannot enter component instance" not in message
                assert await add("a", 3) == 3, "the next call starts fresh"
            assert await add("b", 1) == 2, "other instances are untouched"
            listed = await session.call_tool("list_components", {})
            (info,) = [c for c in listed.structured_content["components"] if c["name"] == "counter"]
            assert info["details"]["limits"]["memory_mib"] == 8
            assert info["details"]["network"] == "denied"
        assert server.proc.poll() is None, "the server stays up"


async def test_load_component_options_and_unload_reload_start_fresh(
    tmp_path: Path, env: dict[str, str]
) -> None:
    allowed = tmp_path / "components"
    install(allowed, "counter")
    with running("--allow-load", allowed, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            loaded = await session.call_tool(
                "load_component", {"path": "counter.wasm", "stateful": True, "key": "session"}
            )
            assert not loaded.is_error, text(loaded)
            assert value(await session.call_tool("counter_add", {"session": "s", "n": 4})) == 4
            assert value(await session.call_tool("counter_add", {"session": "s", "n": 4})) == 8
            assert not (await session.call_tool("unload_component", {"name": "counter"})).is_error
            with pytest.raises(MCPError, match="unknown tool 'counter_add'"):
                await session.call_tool("counter_add", {"session": "s", "n": 1})
            await session.call_tool(
                "load_component", {"path": "counter.wasm", "stateful": True, "key": "session"}
            )
            assert value(await session.call_tool("counter_add", {"session": "s", "n": 1})) == 1
            refused = await session.call_tool(
                "load_component", {"path": "counter.wasm", "durability": "turn"}
            )
            assert refused.is_error and "not persisted" in text(refused)


@pytest.mark.slow
async def test_a_componentize_py_component_keeps_python_state_per_instance(
    tmp_path: Path, env: dict[str, str]
) -> None:
    directory = tmp_path / "components"
    directory.mkdir()
    shutil.copy(notes_component(), directory / "notes.wasm")
    (directory / "notes.toml").write_text("stateful = true\n")
    with running(directory / "notes.wasm", tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"notes_add_note", "notes_list_notes", "notes_read_file"} <= names
            assert not any("init" in name for name in names)
            await session.call_tool("notes_add_note", {"text": "one"})
            await session.call_tool("notes_add_note", {"text": "two"})
            assert value(await session.call_tool("notes_list_notes", {})) == ["one", "two"]
            failed = await session.call_tool("notes_read_file", {"path": "/etc/passwd"})
            assert failed.is_error and "FileNotFoundError" in text(failed)
            panicked = error(await session.call_tool("notes_panic", {"message": "boom"}))
            assert "RuntimeError: boom" in panicked and "in-memory state was lost" in panicked
            assert value(await session.call_tool("notes_list_notes", {})) == []
            listed = json.loads(text(await session.call_tool("list_components", {})))
            assert [c["details"]["env"] for c in listed if c["name"] == "notes"] == [[]]


async def test_handles_work_for_wasm_components_as_for_python_ones(
    tmp_path: Path, env: dict[str, str]
) -> None:
    allowed = tmp_path / "allowed"
    install(allowed, "counter")
    with running("--allow-load", allowed, tmp=tmp_path, env=env) as server:
        async with http_session(server.url, "modern") as session:
            loaded = await session.call_tool(
                "load_component",
                {"path": "counter.wasm", "stateful": True, "key": "session", "handles": True},
            )
            assert not loaded.is_error, text(loaded)
            first = value(await session.call_tool("counter_open", {}))
            second = value(await session.call_tool("counter_open", {}))
            assert value(await session.call_tool("counter_add", {"session": first, "n": 2})) == 2
            assert value(await session.call_tool("counter_add", {"session": first, "n": 3})) == 5
            assert value(await session.call_tool("counter_add", {"session": second, "n": 1})) == 1
            assert value(await session.call_tool("counter_close", {"session": first})) is True
            refused = error(await session.call_tool("counter_add", {"session": first, "n": 1}))
            assert "unknown or closed handle" in refused
            assert "unknown or closed handle" in error(
                await session.call_tool("counter_add", {"session": "made-up", "n": 1})
            )


async def test_live_keyed_instances_are_bounded_and_an_evicted_key_is_told_once(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Before: every key kept its own linear memory until unload (40 keys x 16 MiB = 1 GB)."""
    policy = 'stateful = true\nkey = "session"\n[limits]\ninstances = 2\n'
    counter = install(tmp_path / "components", "counter", policy)
    with running(counter, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:

            async def add(key: str, n: int) -> Any:
                return await session.call_tool("counter_add", {"session": key, "n": n})

            assert value(await add("a", 5)) == 5
            assert value(await add("b", 1)) == 1
            assert value(await add("a", 1)) == 6  # `b` is now the least recently used
            assert value(await add("c", 7)) == 7  # evicts `b`
            lost = error(await add("b", 1))
            assert "evicted" in lost and "limits.instances" in lost and "state was lost" in lost
            assert value(await add("b", 1)) == 1  # told once; then a fresh instance (evicting `a`)
            assert value(await add("c", 1)) == 8  # untouched
            listed = await session.call_tool("list_components", {})
            (info,) = [c for c in listed.structured_content["components"] if c["name"] == "counter"]
            assert info["instances"] == 2
        assert "evicted counter['b']" in server.log()


async def test_option_arguments_and_fields_may_be_left_out_and_mean_none(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Before: every `option<T>` was required, so a caller had to send `null` for each."""
    types = install(tmp_path / "components", "types")
    with running(types, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            option = tools["types_echo_option"].input_schema
            assert option["required"] == [] and option["properties"]["x"]["default"] is None
            memo = tools["types_echo_memo"].input_schema["properties"]["x"]
            assert memo["required"] == ["n"] and memo["properties"]["note"]["default"] is None
            assert value(await session.call_tool("types_echo_option", {})) is None
            assert value(await session.call_tool("types_echo_option", {"x": 4})) == 4
            assert value(await session.call_tool("types_echo_memo", {"x": {"n": 1}})) == {
                "n": 1,
                "note": None,
            }
            assert "field 'x': missing required field 'n'" in error(
                await session.call_tool("types_echo_memo", {"x": {"note": "a"}})
            )


async def test_a_call_that_returns_nothing_answers_ok(tmp_path: Path, env: dict[str, str]) -> None:
    """Before: a unit `ok` (and a function with no result) came back as empty content."""
    types = install(tmp_path / "components", "types")
    with running(types, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            for name, arguments in [("types_echo_unit_result", {"x": {"ok": None}}), ("types_nothing", {})]:
                result = await session.call_tool(name, arguments)
                assert not result.is_error and text(result) == "ok", name
                assert result.structured_content is None, name
            failed = await session.call_tool("types_echo_unit_result", {"x": {"err": None}})
            assert failed.is_error and text(failed) == "error"


async def test_descriptions_are_the_doc_comments_the_component_carries(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Before: every description was generic (`echo-u8`, exported by ...), whatever the WIT said."""
    types = install(tmp_path / "components", "types")
    with running(types, tmp=tmp_path, env=env) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            assert tools["types_echo_u8"].description == "Returns `x` unchanged."
            assert tools["types_scale"].description == "Multiplies `x` by `factor`."
            assert tools["types_echo_u16"].description == (
                "`echo-u16`, exported by the WebAssembly component types.wasm."
            )


async def test_log_level_is_accepted_in_any_case(tmp_path: Path, env: dict[str, str]) -> None:
    counter = install(tmp_path / "components", "counter")
    for level in ("info", "Debug"):
        with running(counter, "--log-level", level, tmp=tmp_path, env=env) as server:
            async with http_session(server.url) as session:
                assert value(await session.call_tool("counter_add", {"session": "s", "n": 2})) == 2
        assert ("DEBUG" in server.log()) is (level == "Debug")


USER = """
from statefulmcp import component, tool


@component(uses={"add": "counter_add"})
class Aaa:
    @tool
    async def add_two(self, session: str) -> int:
        return await self.add(session=session, n=2)
"""


def _ready(base: str) -> httpx.Response:
    """`/ready` once start-up work is done (it answers "starting" until then)."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(f"{base}/ready")
        if response.json()["status"] != "starting" or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


async def test_serve_what_loads_serves_the_rest_and_lists_logs_and_reports_each_failure(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Before: one component that failed to load stopped the whole server (exit code 2)."""
    allowed = tmp_path / "components"
    install(allowed, "counter", 'stateful = true\nkey = "session"\n')
    (allowed / "aaa.py").write_text(USER)  # uses counter's tool: loads after it, in a second round
    (allowed / "bad.wasm").write_bytes(b"not a component")
    (allowed / "zzz.py").write_text(USER.replace("counter_add", "nowhere_add").replace("Aaa", "Zzz"))
    without = start_server(allowed, tmp=tmp_path / "without", env=env, wait=False)
    assert without.proc.wait(60) == 2 and "cannot start" in without.log()
    with running(allowed, "--serve-what-loads", "--allow-load", allowed, tmp=tmp_path, env=env) as server:
        ready = _ready(server.base)
        assert ready.status_code == 200
        assert ready.json() == {"status": "degraded", "missing": ["bad.wasm", "zzz.py"]}
        async with http_session(server.url) as session:
            assert value(await session.call_tool("aaa_add_two", {"session": "s"})) == 2
            assert value(await session.call_tool("counter_add", {"session": "s", "n": 1})) == 3
            listed = (await session.call_tool("list_components", {})).structured_content
            assert {c["name"] for c in listed["components"]} == {"aaa", "counter"}
            failed = {Path(f["source"]).name: f["error"] for f in listed["failed"]}
            assert set(failed) == {"bad.wasm", "zzz.py"}
            assert "not a WebAssembly file" in failed["bad.wasm"]
            assert "names tool 'nowhere_add', which is not loaded" in failed["zzz.py"]
            (allowed / "bad.wasm").write_bytes((allowed / "counter.wasm").read_bytes())
            loaded = await session.call_tool("load_component", {"path": "bad.wasm", "name": "fixed"})
            assert not loaded.is_error, text(loaded)
            listed = (await session.call_tool("list_components", {})).structured_content
            assert [Path(f["source"]).name for f in listed["failed"]] == ["zzz.py"]
        assert _ready(server.base).json() == {"status": "degraded", "missing": ["zzz.py"]}
        log = server.log()
        assert "not serving" in log and "bad.wasm" in log and "zzz.py" in log
