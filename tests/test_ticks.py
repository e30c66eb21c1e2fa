"""Durable ticks are pipelined (the next tick does not wait for the last one's fsync), yet nothing
a reply acknowledged is lost to kill -9, and a reply never acknowledges a write that failed."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import COMPONENTS, http_session, running, start_server, value

from statefulmcp import Host, Stateful, StoreError, ToolCallError, background, component, tool
from statefulmcp.state import Change

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


class _Store:
    """An in-memory store whose commits fail while `failing` is set."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.failing = False

    async def load(self, component: str, key: str) -> dict[str, Any]:
        return dict(self.rows)

    async def commit(self, changes: list[Change]) -> None:
        if self.failing:
            raise StoreError("disk full; nothing of this turn was written")
        for change in changes:
            self.rows.update({k: v for k, v in change.names.items() if isinstance(v, str)})

    async def keys(self, component: str) -> list[str]:
        return [""] if self.rows else []

    async def purge(self, component: str) -> None:
        self.rows.clear()

    async def delete_instance(self, component: str, key: str) -> None:
        self.rows.clear()

    def close(self) -> None:
        pass


@component(stateful=True)
class Pulse(Stateful):
    @background(every=0.002)
    async def tick(self) -> None:
        self.state["n"] = self.state.get("n", 0) + 1

    @tool
    async def n(self) -> int:
        return int(self.state.get("n", 0))


async def test_a_failed_tick_commit_drops_the_instance_and_no_reply_acknowledges_it() -> None:
    store = _Store()
    async with Host(state=store) as host:
        await host.load(Pulse)
        while await host.call("pulse_n") < 3:
            pass
        store.failing = True
        with pytest.raises(ToolCallError):  # replies that observed the failed writes are withdrawn
            for _ in range(10_000):
                await host.call("pulse_n")
        store.failing = False
        durable = int(store.rows["n"])
        assert await host.call("pulse_n") >= durable  # a fresh instance, from what the store holds
