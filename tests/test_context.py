"""A tool's `Context` sends log messages and progress to its caller, in order and before the reply:
from stateful turns on the engine thread and stateless calls alike, in both protocol eras and over
stdio, honouring the level the client asked for."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import COMPONENTS, Heard, http_session, running, stdio_session, value

from statefulmcp import ComponentError, Context, Host, component, tool

pytestmark = [
    pytest.mark.anyio,
    # `logging/setLevel` is deprecated from 2026-07-28 on; handshake-era clients still send it.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

TELLING = COMPONENTS / "telling.py"


async def test_a_stateful_tool_logs_and_reports_progress_before_its_reply(tmp_path: Path) -> None:
    heard = Heard()
    with running(TELLING, tmp=tmp_path) as server:
        async with http_session(server.url, logging_callback=heard.log) as session:
            await session.set_logging_level("info")
            result = await session.call_tool("chatty_count_to", {"n": 2}, progress_callback=heard.progress)
            assert value(result) == 2
    assert heard.events == [
        ("progress", (1, 2, "step 1")),
        ("info", "step 1"),
        ("progress", (2, 2, "step 2")),
        ("info", "step 2"),
        ("warning", {"done": 2}),
    ]


async def test_the_level_a_client_sets_holds_for_its_session_only(tmp_path: Path) -> None:
    strict, lax = Heard(), Heard()
    with running(TELLING, tmp=tmp_path) as server:
        async with (
            http_session(server.url, logging_callback=strict.log) as one,
            http_session(server.url, logging_callback=lax.log) as other,
        ):
            await one.set_logging_level("warning")
            await one.call_tool("chatty_count_to", {"n": 1})
            await other.call_tool("chatty_count_to", {"n": 1})
    assert strict.events == [("warning", {"done": 1})]
    assert [level for level, _ in lax.events] == ["debug", "info", "warning"]


async def test_a_modern_client_hears_the_levels_its_request_asks_for(tmp_path: Path) -> None:
    heard = Heard()
    with running(TELLING, tmp=tmp_path) as server:
        async with http_session(
            server.url, "modern", logging_callback=heard.log, log_level="info"
        ) as session:
            assert value(await session.call_tool("chatty_count_to", {"n": 1})) == 1
            assert value(await session.call_tool("quiet_echo", {"text": "hi"})) == "hi"
    assert heard.events == [("info", "step 1"), ("warning", {"done": 1}), ("error", "hi")]


async def test_a_stateless_tool_logs_and_reports_progress_over_stdio(tmp_path: Path) -> None:
    heard = Heard()
    async with stdio_session(TELLING, cwd=tmp_path, logging_callback=heard.log) as session:
        result = await session.call_tool(
            "quiet_echo", {"text": "over stdio"}, progress_callback=heard.progress
        )
    assert value(result) == "over stdio"
    assert heard.events == [("error", "over stdio"), ("progress", (1, 1, None))]


async def test_the_context_is_no_argument_of_the_tool(tmp_path: Path) -> None:
    with running(TELLING, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            tools = {t.name: t for t in (await session.list_tools()).tools}
            # Without a progress token the tool's progress goes nowhere, and the call still works.
            assert value(await session.call_tool("quiet_echo", {"text": "x"})) == "x"
    assert set(tools["chatty_count_to"].input_schema["properties"]) == {"n"}
    assert tools["quiet_echo"].input_schema["required"] == ["text"]


async def test_an_in_process_call_has_a_context_that_sends_nothing() -> None:
    async with Host() as host:
        await host.load(TELLING)
        assert await host.call("chatty_count_to", {"n": 3}) == 3


async def test_a_sync_tool_cannot_take_a_context() -> None:
    @component
    class Sync:
        @tool
        def hello(self, ctx: Context) -> str:
            return "hi"

    async with Host() as host:
        with pytest.raises(ComponentError, match="make it `async def`"):
            await host.load(Sync)
