"""What users hit writing real stateful components: deadlocks, import order, background
semantics, keys, eager activation, errors and clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import COMPONENTS, http_session, running, value

import statefulmcp
from statefulmcp import (
    ComponentError,
    Host,
    HostStateError,
    Stateful,
    ToolCallError,
    background,
    component,
    tool,
)

pytestmark = pytest.mark.anyio

_both_inside = asyncio.Event()


@component(stateful=True, uses={"b": "bee_ping", "b_call": "bee_call_a"})
class Ay(Stateful):
    arrived = 0
    b: Callable[..., Awaitable[Any]]  # given by `uses=`

    @tool
    async def call_b(self) -> str:
        type(self).arrived += 1
        if type(self).arrived + Bee.arrived == 2:
            _both_inside.set()
        await _both_inside.wait()  # hold A's turn until B's turn is running too
        return str(await self.b())

    @tool
    async def ping(self) -> str:
        return "a"


@component(stateful=True, uses={"a": "ay_ping"})
class Bee(Stateful):
    arrived = 0
    a: Callable[..., Awaitable[Any]]

    @tool
    async def call_a(self) -> str:
        type(self).arrived += 1
        if Ay.arrived + type(self).arrived == 2:
            _both_inside.set()
        await _both_inside.wait()
        return str(await self.a())

    @tool
    async def ping(self) -> str:
        return "b"


async def test_a_deadlock_between_two_concurrent_calls_is_refused() -> None:
    async with Host(max_call_seconds=60) as host:
        await host.load_all([Ay, Bee])
        results = await asyncio.wait_for(
            asyncio.gather(host.call("ay_call_b"), host.call("bee_call_a"), return_exceptions=True), 30
        )
        refused = [r for r in results if isinstance(r, ToolCallError)]
        assert len(refused) == 1 and "deadlock refused" in str(refused[0])
        assert sorted(r for r in results if isinstance(r, str)) in (["a"], ["b"])
        assert await host.call("ay_ping") == "a" and await host.call("bee_ping") == "b"


@pytest.mark.parametrize("order", [("base.py", "user.py"), ("user.py", "base.py")])
def test_a_component_file_imported_by_another_is_refused_in_either_order(
    tmp_path: Path, order: tuple[str, str]
) -> None:
    folder = COMPONENTS / "users_pair"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "statefulmcp",
            "serve",
            *(str(folder / f) for f in order),
            "--http",
            "127.0.0.1:0",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(folder)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "second copy" in run.stderr and "base.py" in run.stderr


@component(stateful=True, durability="memory")
class Watcher(Stateful):
    def __init__(self) -> None:
        self.quiet = 0

    @background
    async def feed(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self.state["n"] = self.state.get("n", 0) + 1
            self.quiet += 1

    @tool
    async def wait_for(self, n: int) -> int:
        await self.wait_until(lambda: self.state.get("n", 0) >= n, timeout=30)
        return int(self.state["n"])

    @tool
    async def wait_quiet(self, n: int, timeout: float) -> bool:
        await self.wait_until(lambda: self.quiet >= n, timeout=timeout)
        return True


async def test_wait_until_sees_a_plain_loops_writes_and_checks_once_more_at_the_deadline() -> None:
    async with Host() as host:
        await host.load(Watcher)
        assert await asyncio.wait_for(host.call("watcher_wait_for", {"n": 5}), 20) >= 5
        # `quiet` is a plain attribute nobody announces; it is true by the deadline.
        assert await host.call("watcher_wait_quiet", {"n": 1, "timeout": 0.5}) is True


@component(stateful=True, durability="memory")
class Ending(Stateful):
    @background
    async def connection(self) -> None:
        self.state["runs"] = self.state.get("runs", 0) + 1  # a websocket closing cleanly: just returns

    @tool
    async def runs(self) -> int:
        return int(self.state.get("runs", 0))


async def test_a_plain_loop_that_returns_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="statefulmcp.background")
    async with Host() as host:
        await host.load(Ending)
        for _ in range(500):
            if await host.call("ending_runs") >= 3:
                break
            await asyncio.sleep(0.02)
        assert await host.call("ending_runs") >= 3
        stats = host.list()[0].details["background"]["connection"]
        assert stats["ended"] >= 2 and "returned" in stats["last_error"]
        assert "background loop ending.connection returned; restarting" in caplog.text


@component(stateful=True, durability="memory")
class Strict(Stateful):
    @tool
    async def increment(self, by: int = 1) -> int:
        return by


async def test_unknown_arguments_are_refused_and_the_schema_says_so() -> None:
    async with Host() as host:
        await host.load(Strict)
        with pytest.raises(ToolCallError, match="bogus: unknown argument"):
            await host.call("strict_increment", {"bogus": 1})
        assert host.tools()["strict_increment"].spec.input_schema["additionalProperties"] is False


@component(uses={"missing": "nowhere_tool"})
class Lost(Stateful):
    @tool
    async def go(self) -> int:
        return 0


async def test_a_uses_alias_naming_a_missing_tool_fails_at_load_naming_it() -> None:
    async with Host() as host:
        with pytest.raises(ComponentError, match="uses alias 'missing' names tool 'nowhere_tool'"):
            await host.load(Lost)
        await host.load_all([Bee, Ay])  # each uses the other: one batch, either order
        assert host.list()[0].name == "bee"


@component(stateful=True, key="device", durability="memory")
class Device(Stateful):
    async def on_activate(self) -> None:
        self.opened = f"connection to {self.key}"  # a per-key resource opened on activation

    @tool
    async def which(self, device: str) -> str:
        return str(self.opened)


async def test_a_keyed_instance_knows_its_key_on_activation() -> None:
    async with Host() as host:
        await host.load(Device)
        assert await host.call("device_which", {"device": "d7"}) == "connection to d7"


_flaky_activations: list[int] = []


@component(stateful=True, key="device", durability="memory")
class FlakyDevice(Stateful):
    async def on_activate(self) -> None:
        _flaky_activations.append(1)
        if len(_flaky_activations) == 1:
            raise ConnectionError("device not answering")

    @tool
    async def ping(self, device: str) -> str:
        return "pong"


async def test_a_failed_lazy_activation_says_the_next_call_tries_again_and_it_does() -> None:
    _flaky_activations.clear()
    async with Host() as host:
        await host.load(FlakyDevice)
        with pytest.raises(
            ToolCallError,
            match=r"on_activate of flaky_device/d1 failed: ConnectionError: "
            r"device not answering; the next call tries again",
        ):
            await host.call("flaky_device_ping", {"device": "d1"})
        assert await host.call("flaky_device_ping", {"device": "d1"}) == "pong"
        assert len(_flaky_activations) == 2


async def test_an_eager_singleton_starts_on_first_boot_before_ready(tmp_path: Path) -> None:
    with running(COMPONENTS / "users_eager.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            assert value(await session.call_tool("heart_activated_as", {})) == "None"
            for _ in range(500):
                if value(await session.call_tool("heart_beats", {})) > 0:
                    break
                await asyncio.sleep(0.02)
            assert value(await session.call_tool("heart_beats", {})) > 0


@component(stateful=True, key="symbol", durability="memory")
class Feed(Stateful):
    @background(every=0.005)
    async def tick(self) -> None:
        self.state["ticks"] = self.state.get("ticks", 0) + 1

    @tool
    async def ticks(self, symbol: str) -> int:
        return int(self.state.get("ticks", 0))


async def test_background_statistics_are_shown_per_instance() -> None:
    async with Host() as host:
        await host.load(Feed)
        for symbol in ("A", "B"):
            await host.call("feed_ticks", {"symbol": symbol})
        while min([await host.call("feed_ticks", {"symbol": s}) for s in ("A", "B")]) < 2:
            await asyncio.sleep(0.01)
        stats = host.list()[0].details["background"]["tick"]
        assert {i["key"] for i in stats["instances"]} == {"A", "B"}
        assert all(i["ticks"] >= 2 for i in stats["instances"])


@component
class Grumpy(Stateful):
    @tool
    async def fail(self) -> int:
        raise ValueError("no such account")


async def test_errors_are_exported_and_the_life_cycle_is_explicit(caplog: pytest.LogCaptureFixture) -> None:
    for name in ("StatefulMCPError", "ComponentError", "ToolCallError", "ActivationError", "StoreError"):
        assert issubclass(getattr(statefulmcp, name), statefulmcp.StatefulMCPError)
    host = Host()
    with pytest.raises(HostStateError, match="async with Host"):
        await host.call("anything")
    caplog.set_level(logging.INFO)
    async with host:
        await host.load(Grumpy)
        with pytest.raises(ToolCallError, match="ValueError: no such account"):
            await host.call("grumpy_fail")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "grumpy" in r.getMessage()]
    with pytest.raises(HostStateError, match="closed"):
        await host.call("grumpy_fail")
    with pytest.raises(HostStateError, match="cannot be reopened"):
        host.start()


async def test_torn_replies_are_impossible(tmp_path: Path) -> None:
    with running(COMPONENTS / "users_torn.py", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            for _ in range(300):
                reply = value(await session.call_tool("growing_snapshot", {}))
                assert reply["n"] == len(reply["items"])


@component(stateful=True, key="k", handles=True, durability="memory")
class Busy(Stateful):
    @background(every=0.001)
    async def tick(self) -> None:
        self.state["t"] = self.state.get("t", 0) + 1

    @background
    async def loop(self) -> None:
        while True:
            await asyncio.sleep(0.01)

    @tool
    async def get(self, k: str) -> int:
        return int(self.state.get("t", 0))


async def test_no_thread_or_task_of_the_host_remains_after_aclose(tmp_path: Path) -> None:
    host = Host(state=tmp_path / "s.db")
    async with host:
        await host.load(Busy)
        await host.load(Grumpy)
        handle = await host.call("busy_open")
        await host.call("busy_get", {"k": handle})
        with pytest.raises(ToolCallError):
            await host.call("grumpy_fail")
    leftover = [t for t in threading.enumerate() if t.name.startswith("statefulmcp-")]
    for thread in leftover:
        thread.join(10)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("statefulmcp-")]
    assert not [
        t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "statefulmcp" in repr(t)
    ]
