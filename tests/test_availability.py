"""One caller cannot stop everyone: bad values, exiting code, blocking code, hanging hooks and
hanging sync bodies each fail their own call and leave the host serving."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from conftest import COMPONENTS, ServerProcess, error, http_session, running, value
from mcp import ClientSession

from statefulmcp import Host, Stateful, ToolCallError, component, tool

pytestmark = pytest.mark.anyio


async def _until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Poll `check` until it holds; the timeout is a generous bound, never a timing assertion."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(0.02)


async def _status(client: httpx.AsyncClient, server: ServerProcess, path: str) -> int:
    return (await client.get(f"{server.base}{path}")).status_code


async def _serves(server: ServerProcess) -> None:
    """The server answers a fresh client: `/health` and `/ready` are 200, listing works."""
    async with httpx.AsyncClient(timeout=30) as client:
        assert await _status(client, server, "/health") == 200
        assert await _status(client, server, "/ready") == 200
    async with http_session(server.url) as session:
        assert "health" not in value(await session.call_tool("list_components", {}))


async def _component(session: ClientSession, name: str) -> dict[str, Any]:
    listed = value(await session.call_tool("list_components", {}))["components"]
    found: dict[str, Any] = next(c for c in listed if c["name"] == name)
    return found


@component(stateful=True, key="k")
class Keyed(Stateful):
    @tool
    async def put(self, k: str, name: str) -> int:
        self.state[name] = 1
        return len(self.state)


@component(stateful=True)
class Exits(Stateful):
    @tool
    async def parse(self) -> int:
        argparse.ArgumentParser(exit_on_error=False, add_help=False).parse_args(["--nope"])
        return 0

    @tool
    async def interrupt(self) -> int:
        raise KeyboardInterrupt

    @tool
    def sync_exit(self) -> int:
        raise SystemExit(3)

    @tool
    async def ok(self) -> int:
        return 1


@component
class StatelessExit(Stateful):
    @tool
    def leave(self) -> int:
        raise SystemExit("bye")


async def test_a_lone_surrogate_in_a_state_name_or_key_fails_that_call_only(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "s.db") as host:
        await host.load(Keyed)
        with pytest.raises(ToolCallError, match="valid Unicode"):
            await host.call("keyed_put", {"k": "a", "name": "\ud800"})
        with pytest.raises(ToolCallError, match="lone surrogate"):
            await host.call("keyed_put", {"k": "\ud800", "name": "x"})
        assert await host.call("keyed_put", {"k": "a", "name": "x"}) == 1
        assert host.health() is None


async def test_system_exit_and_keyboard_interrupt_from_a_tool_fail_that_call_only() -> None:
    async with Host() as host:
        await host.load(Exits)
        await host.load(StatelessExit)
        for name in ("exits_interrupt", "exits_sync_exit", "stateless_exit_leave"):
            with pytest.raises(ToolCallError, match="would stop a program"):
                await host.call(name)
        with pytest.raises(ToolCallError):
            await host.call("exits_parse")
        assert await host.call("exits_ok") == 1
        assert host.health() is None


@component(stateful=True)
class Blocker(Stateful):
    @tool
    async def block(self, seconds: float) -> str:
        time.sleep(seconds)  # noqa: ASYNC251 - a blocking call inside async def: the mistake the watchdog reports
        return "done"


async def test_a_blocking_async_tool_is_reported_by_the_watchdog_and_the_host_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="statefulmcp.engine")
    async with Host(stall_seconds=0.3) as host:
        await host.load(Blocker)
        call = asyncio.ensure_future(host.call("blocker_block", {"seconds": 2.0}))
        reasons: set[str] = set()
        while not call.done():
            reason = host.health()
            if reason is not None:
                reasons.add(reason)
            await asyncio.sleep(0.02)
        assert await call == "done"
        assert any("blocked" in r for r in reasons)
        assert "in block" in caplog.text and "time.sleep" in caplog.text
        for _ in range(200):
            if host.health() is None:
                break
            await asyncio.sleep(0.02)
        assert host.health() is None


_woken = threading.Event()


@component(stateful=True)
class Stubborn(Stateful):
    @tool
    async def touch(self) -> int:
        return 1

    @tool
    def nap(self) -> int:
        _woken.wait(60)
        return 1

    async def on_deactivate(self) -> None:
        await asyncio.Event().wait()


async def test_an_on_deactivate_that_never_returns_does_not_hang_unload() -> None:
    async with Host(hook_seconds=0.5) as host:
        await host.load(Stubborn)
        assert await host.call("stubborn_touch") == 1
        await asyncio.wait_for(host.unload("stubborn"), 20)
        await host.load(Stubborn)
        assert await host.call("stubborn_touch") == 1


_deactivating: list[str] = []
_let_go = threading.Event()


class _Lingering(Stateful):
    """`on_deactivate` lingers until the test lets go (the hook bound is far away)."""

    @tool
    async def touch(self) -> int:
        return 1

    async def on_deactivate(self) -> None:
        _deactivating.append(type(self).__name__)
        while not _let_go.is_set():
            await asyncio.sleep(0.01)


@component(stateful=True)
class LingerOne(_Lingering):
    pass


@component(stateful=True)
class LingerTwo(_Lingering):
    pass


async def test_shutdown_runs_the_on_deactivate_hooks_of_all_components_side_by_side() -> None:
    """Each hook is bounded by hook_seconds; one after another, N stuck components would hold
    shutdown N times that bound (past the drain timeout + 5 s that the server promises)."""
    _deactivating.clear()
    _let_go.clear()
    host = Host(hook_seconds=60)
    await host.__aenter__()
    try:
        await host.load(LingerOne)
        await host.load(LingerTwo)
        assert await host.call("linger_one_touch") == await host.call("linger_two_touch") == 1
        closing = asyncio.ensure_future(host.aclose())
        async with asyncio.timeout(30):  # far below hook_seconds: both hooks run at once
            while len(_deactivating) < 2:
                await asyncio.sleep(0.01)
        assert sorted(_deactivating) == ["LingerOne", "LingerTwo"]
    finally:
        _let_go.set()
    await closing


async def test_a_sync_body_in_flight_does_not_hang_unload() -> None:
    async with Host(hook_seconds=0.5) as host:
        await host.load(Stubborn)
        _woken.clear()
        nap = asyncio.ensure_future(host.call("stubborn_nap"))
        while not host.list()[0].details.get("sync_threads"):
            await asyncio.sleep(0.01)
        await asyncio.wait_for(host.unload("stubborn"), 20)
        assert not nap.done()  # unload did not wait for the body, only for hook_seconds
        _woken.set()
        assert await nap == 1  # the body ran to its end (it wrote nothing), and says so


_gate = threading.Event()


@component
class Hog(Stateful):
    @tool
    def hold(self) -> int:
        _gate.wait(60)
        return 1


@component
class Other(Stateful):
    @tool
    def quick(self) -> int:
        return 2


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    _gate.clear()
    yield _gate
    _gate.set()


@component(stateful=True)
class SyncStubborn(Stateful):
    @tool
    async def touch(self) -> int:
        return 1

    def on_deactivate(self) -> None:
        _gate.wait(60)


async def test_a_sync_on_deactivate_that_never_returns_does_not_hang_unload(gate: threading.Event) -> None:
    """A sync hook runs on a worker thread that cannot be interrupted: unload stops waiting for it."""
    async with Host(hook_seconds=0.5) as host:
        await host.load(SyncStubborn)
        assert await host.call("sync_stubborn_touch") == 1
        await asyncio.wait_for(host.unload("sync_stubborn"), 20)
        assert not gate.is_set()  # the hook is still running, and unload returned anyway
        await host.load(SyncStubborn)
        assert await host.call("sync_stubborn_touch") == 1


async def test_a_component_that_fills_its_threads_cannot_starve_another(gate: threading.Event) -> None:
    async with Host(workers=8) as host:  # a quarter each: 2 threads per component
        await host.load(Hog)
        await host.load(Other)
        held = [asyncio.ensure_future(host.call("hog_hold")) for _ in range(3)]
        while host.list()[0].details.get("sync_threads", {}).get("queued") != 1:
            await asyncio.sleep(0.01)
        assert host.list()[0].details["sync_threads"] == {"busy": 2, "queued": 1, "limit": 2}
        assert await asyncio.wait_for(host.call("other_quick"), 20) == 2
        gate.set()
        assert await asyncio.gather(*held) == [1, 1, 1]


_offloaded: list[int] = []


@component
class Offloader(Stateful):
    @tool
    async def offload(self) -> int:
        await asyncio.to_thread(_offload_body)
        return 1


def _offload_body() -> None:
    _offloaded.append(1)
    _gate.wait(60)


async def test_to_thread_work_that_hangs_cannot_starve_the_sync_tools_of_another_component(
    gate: threading.Event,
) -> None:
    """`asyncio.to_thread` inside an async tool is not a sync body, so no per-component bound
    covers it; it must at least not take the worker threads sync bodies run on."""
    _offloaded.clear()
    async with Host(workers=8) as host:
        await host.load(Offloader)
        await host.load(Other)
        held = [asyncio.ensure_future(host.call("offloader_offload")) for _ in range(8)]
        while len(_offloaded) < 8:
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(host.call("other_quick"), 20) == 2
        gate.set()
        assert await asyncio.gather(*held) == [1] * 8


@component(stateful=True)
class Activating(Stateful):
    activations = 0

    async def on_activate(self) -> None:
        type(self).activations += 1
        await self.wait_until(lambda: True is False, timeout=1)

    @tool
    async def get(self) -> int:
        return 0


@component
class Careless(Stateful):
    @tool
    async def write(self) -> int:
        self.state["x"] = 1
        return 1

    @tool
    async def gen(self) -> list[int]:
        return (i for i in range(3))  # type: ignore[return-value]

    @tool
    async def deep(self) -> Any:
        value: list[Any] = []
        for _ in range(2000):
            value = [value]
        return value

    @tool
    async def surrogate(self) -> str:
        return "\ud800"


async def test_smaller_mistakes_get_clear_errors_and_the_host_serves_on() -> None:
    async with Host() as host:
        await host.load(Activating)
        await host.load(Careless)
        results = await asyncio.gather(
            *(host.call("activating_get") for _ in range(3)), return_exceptions=True
        )
        assert all("wait_until cannot be used in on_activate" in str(r) for r in results)
        assert Activating.activations == 3  # one per call: each failed activation is dropped, retried
        expected = {
            "careless_write": "stateless",
            "careless_gen": "generator",
            "careless_deep": "nested too deeply",
            "careless_surrogate": "lone surrogate",
        }
        for name, message in expected.items():
            result = await host.call_result(name)
            assert result.is_error and message in result.content[0].text, (name, result)  # type: ignore[union-attr]
        assert host.health() is None


async def test_host_call_gives_clear_errors_for_values_it_cannot_copy() -> None:
    """In-process callers get the same clear words as MCP clients, not `deepcopy`'s errors."""
    async with Host() as host:
        await host.load(Careless)
        with pytest.raises(ToolCallError, match="returned a generator, not a value"):
            await host.call("careless_gen")
        with pytest.raises(ToolCallError, match="nested too deeply"):
            await host.call("careless_deep")
        assert host.health() is None


# -- through a real server and a real MCP client --------------------------------------------------

_RAW_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def _raw_session(url: str) -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[httpx.Response]]]:
    """Streamable HTTP by hand, for what the SDK client refuses to send (a lone surrogate).

    `json.dumps` escapes a lone surrogate as the six ASCII characters `\\ud800`, exactly what a
    hostile or buggy client puts on the wire.
    """
    async with httpx.AsyncClient(timeout=30) as client:
        headers = dict(_RAW_HEADERS)

        async def post(message: dict[str, Any]) -> httpx.Response:
            return await client.post(url, content=json.dumps(message), headers=headers)

        init = await post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "raw", "version": "0"},
                },
            }
        )
        assert init.status_code == 200, init.text
        headers["mcp-session-id"] = init.headers["mcp-session-id"]
        headers["mcp-protocol-version"] = "2025-06-18"
        await post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        yield post


def _call(ident: int, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": ident,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


async def test_a_lone_surrogate_in_a_key_or_state_name_fails_that_call_and_the_store_writes_on(
    tmp_path: Path,
) -> None:
    with running(COMPONENTS / "avail_keys.py", "--state", "s.db", tmp=tmp_path) as server:
        async with _raw_session(server.url) as post:
            for ident, arguments in enumerate(
                ({"symbol": "\ud800", "name": "x"}, {"symbol": "a", "name": "\ud800"})
            ):
                refused = await post(_call(ident + 1, "quotes_put", arguments))
                assert refused.status_code == 400  # the SDK's JSON parser refuses it: a parse error
                assert refused.json()["error"]["code"] == -32700
        async with http_session(server.url) as session:
            assert "valid Unicode" in error(await session.call_tool("quotes_bad_name", {"symbol": "a"}))
            assert value(await session.call_tool("quotes_put", {"symbol": "a", "name": "x"})) == 1
            assert value(await session.call_tool("quotes_put", {"symbol": "b", "name": "y"})) == 1
            assert value(await session.call_tool("tally_bump", {})) == 1
        await _serves(server)
    with running(COMPONENTS / "avail_keys.py", "--state", "s.db", tmp=tmp_path) as server:
        async with http_session(server.url) as session:  # what was acknowledged was written
            assert value(await session.call_tool("tally_bump", {})) == 2
            assert value(await session.call_tool("quotes_put", {"symbol": "a", "name": "z"})) == 2


_EXITING = [
    f"{component}_{tool}"
    for component in ("quitter", "leaver")
    for tool in ("parse", "parse_sync", "interrupt", "interrupt_sync")
]


async def test_system_exit_keyboard_interrupt_and_generator_exit_from_any_tool_fail_that_call_only(
    tmp_path: Path,
) -> None:
    """Passed on, any of them would leave the engine task or the transport: a GeneratorExit broke
    the SDK's session manager, so every later session of every client failed while /ready said 200."""
    with running(COMPONENTS / "avail_exits.py", "--state", "s.db", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("quitter_bump", {})) == 1
            for name in _EXITING:
                message = error(await session.call_tool(name, {}))
                assert "would stop a program" in message, name
                assert ("SystemExit(2)" if "parse" in name else "KeyboardInterrupt") in message, name
            for name in (
                "quitter_generator_exit",
                "quitter_generator_exit_sync",
                "leaver_generator_exit_sync",
            ):
                assert "GeneratorExit" in error(await session.call_tool(name, {})), name
            assert value(await session.call_tool("quitter_bump", {})) == 2  # the instance lives on
            assert value(await session.call_tool("leaver_echo", {"text": "still here"})) == "still here"
        await _serves(server)
        assert server.proc.poll() is None


async def test_system_exit_from_a_task_a_tool_started_itself_does_not_end_the_engine(tmp_path: Path) -> None:
    """No call is there to fail: asyncio lets SystemExit out of the loop, which ended the engine
    thread, and every stateful call after it waited forever."""
    with running(COMPONENTS / "avail_exits.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("quitter_bump", {})) == 1
            assert value(await session.call_tool("quitter_spawn_exit", {})) == 0

            async def logged() -> bool:
                return "a task started by user code on the engine loop raised SystemExit" in server.log()

            await _until(logged, "the engine to log the stray SystemExit")
            with anyio.fail_after(20):
                assert value(await session.call_tool("quitter_bump", {})) == 2
        await _serves(server)


async def test_a_blocking_async_tool_is_named_in_the_log_makes_ready_503_and_the_server_recovers(
    tmp_path: Path,
) -> None:
    with running(COMPONENTS / "avail_blocking.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session, httpx.AsyncClient(timeout=30) as client:
            seen: dict[str, Any] = {}

            async def block() -> None:
                seen["result"] = await session.call_tool("sleeper_doze_off_blocking", {"seconds": 6})

            async def list_health() -> bool:
                seen["health"] = value(await session.call_tool("list_components", {})).get("health")
                return seen["health"] is not None

            async with anyio.create_task_group() as tg:
                tg.start_soon(block)
                await _until(lambda: _is(client, server, "/ready", 503), "/ready to say 503")
                await _until(list_health, "list_components to report the stall")
            assert "blocked" in seen["health"]
            assert value(seen["result"]) == "awake"
            await _until(lambda: _is(client, server, "/ready", 200), "/ready to recover")
            assert value(await session.call_tool("sleeper_ping", {})) == "pong"
        log = server.log()
        assert "blocked" in log and "doze_off_blocking" in log and "time.sleep" in log
        await _serves(server)


async def _is(client: httpx.AsyncClient, server: ServerProcess, path: str, status: int) -> bool:
    return await _status(client, server, path) == status


async def test_a_hanging_on_deactivate_and_a_sync_body_in_flight_do_not_hang_unload_component(
    tmp_path: Path,
) -> None:
    """The server's hook bound is the Host default, 10 s: the unload waits that long, not forever."""
    with running(COMPONENTS / "avail_hang.py", "--allow-load", COMPONENTS, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("stubborn_touch", {"who": "stuck"})) == 1
            held: dict[str, Any] = {}

            async def hold() -> None:
                held["result"] = await session.call_tool("stubborn_hold", {"who": "b"})

            async def busy() -> bool:
                return "sync_threads" in (await _component(session, "stubborn"))["details"]

            async with anyio.create_task_group() as tg:
                tg.start_soon(hold)
                await _until(busy, "the sync body to take its thread")
                with anyio.fail_after(10 + 20):  # hook_seconds + a generous margin
                    assert value(await session.call_tool("unload_component", {"name": "stubborn"}))
                assert "result" not in held  # unload did not wait for the body
                assert value(await session.call_tool("gate_release", {}))
            assert value(held["result"]) == 1  # the body ran to its end; it wrote nothing
            assert "on_deactivate of stubborn['stuck'] did not return" in server.log()
            await session.call_tool("load_component", {"path": "avail_hang.py"})
            assert value(await session.call_tool("stubborn_touch", {"who": "fine"})) == 1
        await _serves(server)


async def test_a_component_that_fills_its_threads_cannot_starve_another_over_http(tmp_path: Path) -> None:
    """The server's Host has 64 workers, so each component may hold 16 of them."""
    with running(COMPONENTS / "avail_slots.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            results: list[Any] = []

            async def hold() -> None:
                results.append(value(await session.call_tool("hog_hold", {})))

            async def full() -> bool:
                threads = (await _component(session, "hog"))["details"].get("sync_threads")
                return bool(threads == {"busy": 16, "queued": 1, "limit": 16})

            async with anyio.create_task_group() as tg:
                for _ in range(17):
                    tg.start_soon(hold)
                await _until(full, "hog to hold its 16 threads with one call queued")
                with anyio.fail_after(20):
                    assert value(await session.call_tool("bystander_quick", {})) == 2
                assert value(await session.call_tool("hog_release", {}))
            assert results == [1] * 17
        await _serves(server)


async def test_smaller_mistakes_get_clear_errors_over_http_and_the_server_serves_on(tmp_path: Path) -> None:
    with running(COMPONENTS / "avail_mistakes.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            waits = await _concurrently(session, "waits_in_activate_get", 3)
            assert all("wait_until cannot be used in on_activate" in error(r) for r in waits)
            counts = await _concurrently(session, "slow_start_count", 3)
            assert [value(r) for r in counts] == [1, 1, 1]  # three first calls, one activation
            expected = {
                "careless_write": "is stateless",
                "careless_gen": "returned a generator",
                "careless_deep": "nested too deeply",
                "careless_surrogate": "not valid Unicode",
            }
            for name, message in expected.items():
                assert message in error(await session.call_tool(name, {})), name
            assert value(await session.call_tool("careless_fine", {})) == 7
        await _serves(server)


async def _concurrently(session: ClientSession, name: str, count: int) -> list[Any]:
    results: list[Any] = []

    async def one() -> None:
        results.append(await session.call_tool(name, {}))

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(one)
    return results


async def test_a_tool_raising_cancelled_error_of_its_own_fails_that_call_and_the_session_lives_on(
    tmp_path: Path,
) -> None:
    """Left alone, a stray CancelledError ends the engine task as "cancelled", and the SDK then
    ends the whole MCP session: every other call of that client with it."""
    with running(COMPONENTS / "avail_cancels.py", "--state", "s.db", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("cancelled_bump", {})) == 1
            for name in (
                "cancelled_awaits",
                "cancelled_raises_sync",
                "cancelled_stateless_awaits",
                "cancelled_stateless_raises_sync",
            ):
                message = error(await session.call_tool(name, {}))
                assert "CancelledError" in message and "not cancelled" in message, (name, message)
            assert value(await session.call_tool("cancelled_half", {})) is False  # its turn was rolled back
            assert value(await session.call_tool("cancelled_bump", {})) == 2

            async def loop_restarted() -> bool:
                stats = (await _component(session, "cancelled_loop"))["details"]["background"]["loop"]
                return bool(stats["failures"] >= 2)

            await _until(loop_restarted, "the background loop to be restarted after its stray cancel")
        await _serves(server)
