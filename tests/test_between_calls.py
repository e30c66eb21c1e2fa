"""Work between calls: background ticks, long-polls, timeouts, cancellation, calls to other tools."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import COMPONENTS, EXAMPLES, ServerProcess, error, http_session, running, stdio_session, value
from mcp.types import CallToolResult

pytestmark = pytest.mark.anyio

DRIVER = COMPONENTS / "driver.py"


async def component_details(session: Any, name: str) -> dict[str, Any]:
    listed = value(await session.call_tool("list_components", {}))["components"]
    (found,) = [c for c in listed if c["name"] == name]
    return dict(found)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running(DRIVER, tmp=tmp_path_factory.mktemp("driver")) as server:
        yield server


@pytest.mark.slow
async def test_a_1khz_background_tick_never_interleaves_with_calls_and_accounts_for_every_slot(
    driver: ServerProcess,
) -> None:
    """Calls that hold the turn across awaits run beside the 1 kHz tick until 1000 ticks have run.

    The window is a count of ticks, not a guessed duration. The schedule's accounting (every slot a
    tick that ran or one counted as skipped) is checked against the client's clock around the window:
    no more slots than the outer interval holds, and no fewer than most of the inner one (a tick
    delayed by a starved machine counts its skipped slots only when it runs).
    """
    async with http_session(driver.url) as session:
        outer_start = anyio.current_time()
        start = value(await session.call_tool("driver_report", {}))  # activates the instance
        inner_start = anyio.current_time()
        pokes = 0
        report = start
        with anyio.fail_after(60):
            while report["ticks"] - start["ticks"] < 1000:
                async with anyio.create_task_group() as tg:
                    for n in range(4):
                        tg.start_soon(session.call_tool, "driver_poke", {"n": n})
                pokes += 4
                report = value(await session.call_tool("driver_report", {}))
        inner_ms = (anyio.current_time() - inner_start) * 1000
        tick = (await component_details(session, "driver"))["details"]["background"]["tick"]
        outer_ms = (anyio.current_time() - outer_start) * 1000
    assert report["overlaps"] == 0  # no tick ever ran inside a tool call's turn
    assert report["pokes"] == pokes
    assert tick["failures"] == 0
    slots = tick["ticks"] + tick["skipped"] - start["ticks"]
    assert 0.75 * inner_ms <= slots <= outer_ms + 2, (inner_ms, outer_ms, tick)
    assert tick["lateness_us"]["p50"] is not None and tick["lateness_us"]["max"] >= tick["lateness_us"]["p50"]


async def test_a_long_poll_waits_while_other_calls_make_it_true(driver: ServerProcess) -> None:
    async with http_session(driver.url) as session:
        results: list[CallToolResult] = []

        async def waiter() -> None:
            results.append(await session.call_tool("mailbox_wait_for", {"room": "lp", "n": 2, "timeout": 20}))

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            with anyio.fail_after(20):
                while (await component_details(session, "mailbox"))["details"]["waiters"] != 1:
                    await anyio.sleep(0.02)
            # The waiting call does not hold the instance: these run and make the predicate true.
            assert value(await session.call_tool("mailbox_push", {"room": "lp", "item": "a"})) == 1
            assert value(await session.call_tool("mailbox_push", {"room": "lp", "item": "b"})) == 2
        assert value(results[0]) == ["a", "b"]
        assert (await component_details(session, "mailbox"))["details"]["waiters"] == 0


async def test_a_long_poll_times_out_with_a_clear_error_or_the_tool_catches_it(driver: ServerProcess) -> None:
    async with http_session(driver.url) as session:
        timed_out = error(await session.call_tool("mailbox_wait_for", {"room": "to", "n": 5, "timeout": 0.3}))
        assert "wait_until timed out after 0.3 s" in timed_out
        caught = await session.call_tool("mailbox_wait_or_default", {"room": "to", "n": 5, "timeout": 0.2})
        assert value(caught) == "timed out"
        assert value(await session.call_tool("mailbox_push", {"room": "to", "item": "x"})) == 1  # not held


async def test_a_waiting_call_sends_progress_when_the_client_asked_for_it(driver: ServerProcess) -> None:
    async with http_session(driver.url) as session:
        heard: list[float] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            heard.append(progress)

        async def push_later() -> None:
            with anyio.fail_after(30):  # push once a heartbeat was heard, not after a guessed time
                while not heard:
                    await anyio.sleep(0.05)
            await session.call_tool("mailbox_push", {"room": "pg", "item": "done"})

        async with anyio.create_task_group() as tg:
            tg.start_soon(push_later)
            result = await session.call_tool(
                "mailbox_wait_for", {"room": "pg", "n": 1, "timeout": 20}, progress_callback=on_progress
            )
        assert value(result) == ["done"]
        assert heard, "no progress notification arrived while the call waited"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_that_cancels_leaves_no_waiter_behind(tmp_path: Path, transport: str) -> None:
    async def exercise(session: Any) -> None:
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                await session.call_tool("mailbox_wait_for", {"room": "c", "n": 3, "timeout": 60})
                raise AssertionError("the wait should not have finished")

            tg.start_soon(wait)
            with anyio.fail_after(10):  # cancel once the wait is parked, not after a guessed time
                while (await component_details(session, "mailbox"))["details"]["waiters"] != 1:
                    await anyio.sleep(0.02)
            tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            while (await component_details(session, "mailbox"))["details"]["waiters"]:
                await anyio.sleep(0.05)
        assert value(await session.call_tool("mailbox_push", {"room": "c", "item": "x"})) == 1

    if transport == "stdio":
        async with stdio_session(DRIVER, cwd=tmp_path) as session:
            await exercise(session)
    else:
        with running(DRIVER, tmp=tmp_path) as server:
            async with http_session(server.url) as session:
                await exercise(session)


async def test_a_background_tick_that_raises_is_restarted_and_reported(driver: ServerProcess) -> None:
    async with http_session(driver.url) as session:
        await session.call_tool("flaky_ok_ticks", {})  # activates the instance
        with anyio.fail_after(15):
            while value(await session.call_tool("flaky_ok_ticks", {})) < 3:
                await anyio.sleep(0.05)
        work = (await component_details(session, "flaky"))["details"]["background"]["work"]
    assert work["failures"] == 2
    assert work["last_error"] == "RuntimeError: flaky failure 2"
    assert "flaky failure 1" in driver.log() and "Traceback" in driver.log()


async def test_per_tool_and_server_wide_time_limits_give_clear_errors(tmp_path: Path) -> None:
    with running(DRIVER, "--max-call-seconds", "1", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            per_tool = error(await session.call_tool("slow_nap", {"seconds": 2}))
            assert "time limit of 0.3 s" in per_tool and "@tool(timeout=0.3)" in per_tool
            sync = error(await session.call_tool("slow_sync_nap", {"seconds": 1}))
            assert "time limit of 0.3 s" in sync
            # The cancelled sync body still released the instance once it returned.
            assert value(await session.call_tool("slow_nap", {"seconds": 0})) == "woke"
            server_wide = error(await session.call_tool("slow_long_nap", {"seconds": 3}))
            assert "time limit of 1 s" in server_wide and "--max-call-seconds 1" in server_wide


async def test_calls_to_local_tools_work_and_self_calls_are_refused(driver: ServerProcess) -> None:
    async with http_session(driver.url) as session:
        assert value(await session.call_tool("relay_forward", {"room": "fw", "item": "hi"})) == 1
        assert value(await session.call_tool("relay_forward", {"room": "fw", "item": "again"})) == 2
        assert value(await session.call_tool("mailbox_wait_for", {"room": "fw", "n": 2})) == ["hi", "again"]
        refused = error(await session.call_tool("relay_call_myself", {"room": "r1"}))
        assert "deadlock refused" in refused
        assert value(await session.call_tool("relay_echo", {"room": "r1"})) == "r1"  # still usable


async def test_calls_to_a_tool_on_another_server_with_the_callers_timeout(tmp_path: Path) -> None:
    with (
        running(EXAMPLES / "text.py", DRIVER, tmp=tmp_path / "remote") as remote,
        running(DRIVER, tmp=tmp_path / "local", env={"REMOTE_URL": remote.url}) as local,
    ):
        async with http_session(local.url) as session:
            assert value(await session.call_tool("caller_count_remote", {"text": "a b c d"})) == 4
            assert value(await session.call_tool("caller_count_remote", {"text": "e f"})) == 2
            late = error(await session.call_tool("caller_nap_remote", {"seconds": 1.5}))
            assert "did not answer within 0.5 s" in late and remote.url in late
            missing = error(await session.call_tool("caller_missing_remote", {}))
            assert "no_such_tool" in missing
            assert value(await session.call_tool("caller_count_remote", {"text": "x"})) == 1


APP = """
import asyncio
import sys

from statefulmcp import Host, Stateful, component, tool


@component
class App(Stateful):
    @tool
    def ping(self) -> str:
        return "pong"


async def main() -> None:
    async with Host() as host:
        await host.load(LOAD)
        print(await host.call("app_ping"))


if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_component_file_run_as_main_and_loaded_again_gets_a_clear_error(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP.replace("LOAD", "__file__"))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode != 0
    assert "runs as the __main__ script" in run.stderr and "sys.modules[__name__]" in run.stderr
    # What the error says to do works, with the components registered once.
    script.write_text(APP.replace("LOAD", "sys.modules[__name__]"))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "pong"
