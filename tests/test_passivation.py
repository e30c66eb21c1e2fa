"""Passivation and bounds: idle instances leave memory and come back from the store, the host
keeps at most `max_instances` live, and idle handles expire.

Every wait is on a condition (an instance count, a hook that ran); "did not happen" is shown by
something that must happen later having happened, never by a sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest

from statefulmcp import Host, Stateful, ToolCallError, background, component, tool

pytestmark = pytest.mark.anyio


async def until(condition: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Wait until `condition()` holds (polled; the bound only turns a hang into a failure)."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


def live(host: Host, name: str) -> int:
    return next(info.instances for info in host.list() if info.name == name)


@component(stateful=True, key="account")
class Account(Stateful):
    """A durable balance with a copy in memory, and a count of its passivations."""

    deactivations: ClassVar[dict[str, int]] = {}
    gate: ClassVar[asyncio.Event | None] = None

    def __init__(self) -> None:
        self.balance = 0

    async def on_activate(self) -> None:
        self.balance = self.state.get("balance", 0)

    async def on_deactivate(self) -> None:
        assert self.key is not None
        Account.deactivations[self.key] = Account.deactivations.get(self.key, 0) + 1
        if Account.gate is not None:
            await Account.gate.wait()
        self.state["passivated"] = self.state.get("passivated", 0) + 1

    @tool
    async def add(self, account: str, amount: int) -> int:
        self.balance += amount
        self.state["balance"] = self.balance
        return self.balance

    @tool
    async def passivated(self, account: str) -> int:
        return int(self.state.get("passivated", 0))

    @tool
    async def wait_for(self, account: str, balance: int) -> int:
        await self.wait_until(lambda: self.state.get("balance", 0) >= balance, timeout=60)
        return int(self.state["balance"])


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    Account.deactivations = {}
    Account.gate = None


async def test_an_idle_durable_instance_is_passivated_and_its_next_call_resumes_from_the_store(
    tmp_path: Path,
) -> None:
    async with Host(state=tmp_path / "state.db", idle_seconds=0.2) as host:
        await host.load(Account)
        assert await host.call("account_add", {"account": "a", "amount": 5}) == 5
        await until(lambda: live(host, "account") == 0, "the idle instance was passivated")
        assert Account.deactivations == {"a": 1}
        # Activated again from what on_deactivate committed: nothing was lost.
        assert await host.call("account_add", {"account": "a", "amount": 1}) == 6
        assert await host.call("account_passivated", {"account": "a"}) == 1


async def test_a_waiting_instance_is_not_idle_while_an_idle_one_is_passivated(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db", idle_seconds=0.2) as host:
        await host.load(Account)
        waiting = asyncio.ensure_future(host.call("account_wait_for", {"account": "w", "balance": 3}))
        await until(lambda: live(host, "account") == 1, "the waiter's instance is live")
        # Called after the waiter parked: passivated only after it would have been, if it were idle.
        await host.call("account_add", {"account": "later", "amount": 1})
        await until(lambda: "later" in Account.deactivations, "the idle instance was passivated")
        assert "w" not in Account.deactivations and not waiting.done()
        assert await host.call("account_add", {"account": "w", "amount": 3}) == 3
        assert await waiting == 3


async def test_a_call_that_arrives_during_passivation_is_served_from_the_store(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db", idle_seconds=0.1) as host:
        await host.load(Account)
        Account.gate = asyncio.Event()
        gate = Account.gate
        assert await host.call("account_add", {"account": "a", "amount": 2}) == 2
        await until(lambda: Account.deactivations.get("a") == 1, "on_deactivate started")
        call = asyncio.ensure_future(host.call("account_add", {"account": "a", "amount": 1}))
        await asyncio.sleep(0)  # the call is queued behind the passivation, which holds the turn
        # Host.call runs on the engine loop, the gate belongs to it.
        host.engine.loop.call_soon_threadsafe(gate.set)
        assert await call == 3  # no error, and the passivation's commit came first
        assert await host.call("account_passivated", {"account": "a"}) == 1


async def test_past_max_instances_the_least_recently_used_idle_one_is_passivated(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db", idle_seconds=None, max_instances=3) as host:
        await host.load(Account)
        for n, account in enumerate("abcde", start=1):
            assert await host.call("account_add", {"account": account, "amount": n}) == n
        await until(lambda: live(host, "account") <= 3, "the host keeps at most 3 live")
        assert set(Account.deactivations) == {"a", "b"}  # the least recently used went first
        assert [await host.call("account_add", {"account": a, "amount": 0}) for a in "abcde"] == [
            1,
            2,
            3,
            4,
            5,
        ]


async def test_at_max_instances_with_none_idle_a_new_key_is_refused_clearly(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db", max_instances=2) as host:
        await host.load(Account)
        waits = [
            asyncio.ensure_future(host.call("account_wait_for", {"account": a, "balance": 1})) for a in "ab"
        ]
        await until(lambda: live(host, "account") == 2, "both waiters are parked")
        with pytest.raises(ToolCallError, match=r"2 live instances and none is idle .*--max-instances"):
            await host.call("account_add", {"account": "c", "amount": 1})
        for a in "ab":
            await host.call("account_add", {"account": a, "amount": 1})
        assert [await w for w in waits] == [1, 1]


@component(stateful=True, key="room", durability="memory")
class Room(Stateful):
    def __init__(self) -> None:
        self.said: list[str] = []

    @tool
    async def say(self, room: str, text: str) -> list[str]:
        self.said.append(text)
        return self.said


async def test_memory_instances_are_kept_by_default_and_told_when_a_bound_evicts_them() -> None:
    async with Host(idle_seconds=0.05, max_instances=1) as host:
        await host.load(Room)
        assert await host.call("room_say", {"room": "a", "text": "hi"}) == ["hi"]
        # The default idle time leaves state that lives only in memory alone; the bound does not.
        assert await host.call("room_say", {"room": "b", "text": "yo"}) == ["yo"]
        await until(lambda: live(host, "room") == 1, "room a was evicted for room b")
        with pytest.raises(ToolCallError, match=r"evicted .*--max-instances.*in-memory state was lost"):
            await host.call("room_say", {"room": "a", "text": "again"})
        assert await host.call("room_say", {"room": "a", "text": "again"}) == ["again"]


@component(stateful=True)
class Metronome(Stateful):
    @background(every=0.01)
    async def tick(self) -> None:
        self.state["ticks"] = self.state.get("ticks", 0) + 1

    @tool
    async def ticks(self) -> int:
        return int(self.state.get("ticks", 0))


async def test_an_instance_with_background_work_is_never_idle(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db", idle_seconds=0.05) as host:
        await host.load(Metronome)
        await host.load(Account)
        first = await host.call("metronome_ticks", {})
        await host.call("account_add", {"account": "later", "amount": 1})
        await until(lambda: "later" in Account.deactivations, "the idle account was passivated")
        assert live(host, "metronome") == 1
        assert await host.call("metronome_ticks", {}) > first


@component(stateful=True, handles=True, handle_idle_seconds=0.2)
class Scratch(Stateful):
    @tool
    async def put(self, session: str, text: str) -> str:
        self.state["text"] = text
        return text


async def test_an_idle_handle_expires_with_its_state_and_gets_the_closed_handle_error(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db") as host:
        await host.load(Scratch)
        handle = await host.call("scratch_open", {})
        assert await host.call("scratch_put", {"session": handle, "text": "x"}) == "x"
        assert host.store is not None
        store = host.store

        async def stored() -> dict[str, str]:
            return await host.engine.run(lambda: store.load("scratch", handle))

        assert "text" in await stored()
        async with asyncio.timeout(30):
            while await stored():
                await asyncio.sleep(0.02)
        with pytest.raises(
            ToolCallError, match=r"unknown or closed handle .*\(or expired: unused for 0.2 s\)"
        ):
            await host.call("scratch_put", {"session": handle, "text": "y"})
        assert live(host, "scratch") == 0


async def test_past_max_waiters_a_long_poll_is_refused_clearly_and_the_others_are_served(
    tmp_path: Path,
) -> None:
    async with Host(state=tmp_path / "state.db", max_waiters=2) as host:
        await host.load(Account)
        waits = [
            asyncio.ensure_future(host.call("account_wait_for", {"account": "a", "balance": 1}))
            for _ in range(2)
        ]
        await until(lambda: host.list()[0].details["waiters"] == 2, "both waiters are parked")
        with pytest.raises(ToolCallError, match=r"already has 2 calls waiting .*--max-waiters"):
            await host.call("account_wait_for", {"account": "a", "balance": 1})
        assert await host.call("account_add", {"account": "a", "amount": 1}) == 1
        assert [await w for w in waits] == [1, 1]
