"""One caller cannot stop everyone: bad values, exiting code, blocking code, hanging hooks and
hanging sync bodies each fail their own call and leave the host serving."""

from __future__ import annotations

import argparse
import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statefulmcp import Host, Stateful, ToolCallError, component, tool

pytestmark = pytest.mark.anyio


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


@component(stateful=True)
class Stubborn(Stateful):
    @tool
    async def touch(self) -> int:
        return 1

    @tool
    def nap(self, seconds: float) -> int:
        time.sleep(seconds)
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


async def test_a_sync_body_in_flight_does_not_hang_unload() -> None:
    async with Host(hook_seconds=0.5) as host:
        await host.load(Stubborn)
        nap = asyncio.ensure_future(host.call("stubborn_nap", {"seconds": 3.0}))
        while not host.list()[0].details.get("sync_threads"):
            await asyncio.sleep(0.01)
        await asyncio.wait_for(host.unload("stubborn"), 20)
        assert not nap.done()  # unload did not wait for the 3 s body, only for hook_seconds
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
