"""Durable ticks are pipelined (the next tick does not wait for the last one's fsync), yet nothing
a reply acknowledged is lost to kill -9, and a reply never acknowledges a write that failed."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path

import pytest
from conftest import COMPONENTS, MemoryStore, http_session, running, start_server, value

from statefulmcp import Host, Stateful, ToolCallError, background, component, tool

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("acks", [5, 40, 150])
async def test_kill_9_never_loses_a_tick_a_reply_acknowledged(tmp_path: Path, acks: int) -> None:
    args = (COMPONENTS / "ticks_durable.py", "--state", "s.db")
    server = start_server(*args, tmp=tmp_path)
    try:
        async with http_session(server.url) as session:
            acknowledged = [value(await session.call_tool("beat_n", {})) for _ in range(acks)]
            server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
    finally:
        server.stop(sig=signal.SIGKILL)
    with running(*args, tmp=tmp_path) as restarted:
        async with http_session(restarted.url) as session:
            restored = value(await session.call_tool("beat_n", {}))
    assert restored >= max(acknowledged) > 0


_loaded: list[int] = []


@component(stateful=True)
class Pulse(Stateful):
    """Each tick builds on the last; each activation records what it was built from."""

    async def on_activate(self) -> None:
        _loaded.append(int(self.state.get("n", 0)))

    @background(every=0.002)
    async def tick(self) -> None:
        self.state["n"] = self.state.get("n", 0) + 1

    @tool
    async def n(self) -> int:
        return int(self.state.get("n", 0))


async def test_a_failed_tick_commit_drops_the_instance_and_no_reply_acknowledges_it() -> None:
    store = MemoryStore()
    async with Host(state=store) as host:
        await host.load(Pulse)
        while await host.call("pulse_n") < 3:
            pass
        store.failing = True
        with pytest.raises(ToolCallError):  # replies that observed the failed writes are withdrawn
            for _ in range(10_000):
                await host.call("pulse_n")
        store.failing = False
        durable = int(store.rows[("pulse", "")]["n"])
        assert await host.call("pulse_n") >= durable  # a fresh instance, from what the store holds


async def test_after_a_failed_tick_commit_no_later_tick_commit_lands() -> None:
    """Ticks N+1, N+2... were handed over while tick N's commit was in flight, and were built on
    its writes. If N fails and they landed, the disk would hold a state memory never had (their
    writes without N's); they fail with it, and the fresh instance starts from before N."""
    _loaded.clear()
    store = MemoryStore()
    async with Host(state=store) as host:
        await host.load(Pulse)
        assert await host.call("pulse_n") >= 0  # activates the instance; its ticks start
        async with asyncio.timeout(30):
            while int(store.rows.get(("pulse", ""), {}).get("n", "0")) < 3:
                await asyncio.sleep(0.002)
        held = store.held = asyncio.Event()
        async with asyncio.timeout(30):
            while store.waiting < 4:  # tick N and three ticks after it, all in flight
                await asyncio.sleep(0.002)
        before = int(store.rows[("pulse", "")]["n"])
        store.fail_next = True
        store.held = None
        held.set()
        async with asyncio.timeout(30):
            while len(_loaded) < 2:  # dropped; the next call activates it again from the store
                with contextlib.suppress(ToolCallError):  # a call may see the old one dropped
                    await host.call("pulse_n")
    assert _loaded[1] == before
