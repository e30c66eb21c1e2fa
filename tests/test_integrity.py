"""Nothing acknowledged is lost, nothing refused or cancelled is kept: integrity under attack."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import COMPONENTS, EXAMPLES, MemoryStore, error, http_session, running, value
from mcp import ClientSession

from statefulmcp import Host

pytestmark = pytest.mark.anyio


@pytest.fixture
def loadable(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    for name in ("integ_poll.py", "integ_bad_durability.py", "integ_bad_every.py", "integ_bad_timeout.py"):
        shutil.copy(COMPONENTS / name, allowed / name)
    for name in ("counter.py", "notes.py"):
        shutil.copy(EXAMPLES / name, allowed / name)
    return allowed


async def _waiters(session: ClientSession, component: str, count: int) -> None:
    with anyio.fail_after(30):
        while True:
            listed = value(await session.call_tool("list_components", {}))["components"]
            if any(c["name"] == component and c["details"].get("waiters") == count for c in listed):
                return
            await anyio.sleep(0.02)


async def test_a_parked_long_poll_fails_at_replace_and_never_overwrites_newer_state(
    tmp_path: Path, loadable: Path
) -> None:
    args = ("--allow-load", loadable, "--state", "s.db")
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "integ_poll.py"})
            assert value(await session.call_tool("poll_increment", {})) == 1
            outcome: dict[str, Any] = {}

            async def park() -> None:
                outcome["result"] = await session.call_tool("poll_wait_then_write", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(park)
                await _waiters(session, "poll", 1)
                with anyio.fail_after(3):  # far below the waiter's own 4 s: it fails at once
                    await session.call_tool("load_component", {"path": "integ_poll.py"})
                    while "result" not in outcome:
                        await anyio.sleep(0.02)
            assert "while this call waited" in error(outcome["result"])
            for expected in range(2, 12):
                assert value(await session.call_tool("poll_increment", {})) == expected
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "integ_poll.py"})
            assert value(await session.call_tool("poll_get", {})) == 11


async def test_a_waiter_on_a_closed_handle_fails_at_once_and_its_rows_are_gone(
    tmp_path: Path, loadable: Path
) -> None:
    args = ("--allow-load", loadable, "--state", "s.db")
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "integ_poll.py"})
            handle = value(await session.call_tool("conversation_open", {}))
            assert value(await session.call_tool("conversation_increment", {"session": handle})) == 1
            outcome: dict[str, Any] = {}

            async def park() -> None:
                outcome["result"] = await session.call_tool(
                    "conversation_wait_then_write", {"session": handle}
                )

            async with anyio.create_task_group() as tg:
                tg.start_soon(park)
                await _waiters(session, "conversation", 1)
                with anyio.fail_after(3):
                    assert value(await session.call_tool("conversation_close", {"session": handle})) is True
                    while "result" not in outcome:
                        await anyio.sleep(0.02)
            assert error(outcome["result"])
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("SELECT count(*) FROM state WHERE key = ?", (handle,)).fetchone() == (0,)


async def test_a_closed_handle_never_comes_back(tmp_path: Path, loadable: Path) -> None:
    args = ("--allow-load", loadable, "--state", "s.db")
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "notes.py"})
            for _ in range(5):
                handle = value(await session.call_tool("notes_open", {}))
                await session.call_tool("notes_add", {"session": handle, "text": "x"})
                results: list[Any] = []

                async def close(h: str = handle, results: list[Any] = results) -> None:
                    results.append(value(await session.call_tool("notes_close", {"session": h})))

                async def add(h: str = handle) -> None:
                    await session.call_tool("notes_add", {"session": h, "text": "y"})

                async with anyio.create_task_group() as tg:
                    tg.start_soon(close)
                    tg.start_soon(add)
                assert results == [True]
                refused = error(await session.call_tool("notes_add", {"session": handle, "text": "z"}))
                assert "unknown or closed handle" in refused
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "notes.py"})
            assert "unknown or closed handle" in error(
                await session.call_tool("notes_list", {"session": handle})
            )


async def test_admin_tool_arguments_are_checked_against_their_schema(tmp_path: Path, loadable: Path) -> None:
    args = ("--allow-load", loadable, "--state", "s.db")
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "counter.py"})
            assert value(await session.call_tool("counter_increment", {"by": 5})) == 5
            refusals: list[tuple[str, dict[str, Any], str]] = [
                ("unload_component", {"name": "counter", "purge": "false"}, "purge"),
                ("load_component", {"path": "counter.py", "handles": "false"}, "handles"),
                ("load_component", {"path": "counter.py", "stateful": "no"}, "stateful"),
                ("load_component", {"path": "counter.py", "name": 7}, "name"),
                ("load_component", {"path": "counter.py", "name": "a b\n/c"}, "a b"),
                ("load_component", {"path": "coun\x00ter.py"}, "NUL"),
                ("load_component", {"path": "counter.py", "durability": "Turn"}, "durability"),
            ]
            for tool, arguments, named in refusals:
                assert named in error(await session.call_tool(tool, arguments)), arguments
            assert value(await session.call_tool("counter_get", {})) == 5
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("load_component", {"path": "counter.py"})
            assert value(await session.call_tool("counter_get", {})) == 5  # nothing was purged


async def test_invalid_declarations_are_load_errors_naming_the_problem(
    tmp_path: Path, loadable: Path
) -> None:
    with running("--allow-load", loadable, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            for path, named in [
                ("integ_bad_durability.py", "durability='durable'"),
                ("integ_bad_every.py", "finite positive number"),
                ("integ_bad_timeout.py", "timeout"),
            ]:
                assert named in error(await session.call_tool("load_component", {"path": path})), path
            listed = value(await session.call_tool("list_components", {}))["components"]
            assert [c["name"] for c in listed] == []


async def test_a_commit_held_up_past_the_time_limit_is_reported_as_it_landed(tmp_path: Path) -> None:
    state = tmp_path / "s.db"
    args = (COMPONENTS / "integ_slow_commit.py", "--state", state)
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("saver_save", {"n": 1})) == 1
            blocker = sqlite3.connect(state, isolation_level=None, timeout=30, check_same_thread=False)
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds SQLite's write lock
            release = threading.Timer(2.5, lambda: blocker.execute("ROLLBACK"))
            release.start()
            result = await session.call_tool("saver_save", {"n": 2})
            release.join()
            blocker.close()
            acknowledged = not result.is_error
            in_memory = value(await session.call_tool("saver_get", {}))
    with running(*args, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            on_disk = value(await session.call_tool("saver_get", {}))
    assert on_disk == in_memory == (2 if acknowledged else 1)


async def test_the_shipped_examples_do_not_count_a_failed_call() -> None:
    store = MemoryStore()
    async with Host(state=store) as host:
        await host.load(EXAMPLES / "counter.py")
        await host.load(EXAMPLES / "ticker.py")
        await host.load(EXAMPLES / "notes.py")
        handle = await host.call("notes_open")
        assert await host.call("counter_increment", {"by": 1}) == 1
        assert await host.call("ticker_add", {"symbol": "X", "price": 1.0}) == 1
        assert await host.call("notes_add", {"session": handle, "text": "a"}) == 1
        steps: list[tuple[str, dict[str, Any]]] = [
            ("counter_increment", {"by": 100}),
            ("ticker_add", {"symbol": "X", "price": 2.0}),
            ("notes_add", {"session": handle, "text": "lost"}),
        ]
        for tool, arguments in steps:
            store.fail_next = True
            with pytest.raises(Exception, match="nothing of this turn was written"):
                await host.call(tool, arguments)
        assert await host.call("counter_increment", {"by": 1}) == 2
        assert await host.call("ticker_add", {"symbol": "X", "price": 3.0}) == 2
        assert await host.call("notes_add", {"session": handle, "text": "b"}) == 2
        assert await host.call("notes_list", {"session": handle}) == ["a", "b"]
