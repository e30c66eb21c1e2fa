"""The in-process Python API (`Host`) and the pure parts: names, schemas, state views, URLs."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from statefulmcp import Host, LoadOptions, Stateful, ToolCallError, component, tool
from statefulmcp.components import ComponentError, snake_case, specs_from_object
from statefulmcp.state import DELETED, StoreError, store_path
from statefulmcp.state.view import StateValueError, StateView

pytestmark = pytest.mark.anyio


@component(stateful=True, key="user")
class Wallet(Stateful):
    """One wallet per user."""

    def __init__(self) -> None:
        self.coins = 0

    async def on_activate(self) -> None:
        self.coins = self.state.get("coins", 0)

    @tool
    async def earn(self, user: str, coins: int) -> int:
        await asyncio.sleep(0)
        self.coins += coins
        self.state["coins"] = self.coins
        return self.coins


@tool
def shout(text: str) -> str:
    return text.upper()


async def test_host_call_returns_the_tool_value_and_raises_tool_call_error(tmp_path: Path) -> None:
    async with Host(state=tmp_path / "state.db") as host:
        assert await host.load(Wallet) == ["wallet"]
        assert await host.load(shout) == ["shout"]
        assert await host.call("wallet_earn", {"user": "ann", "coins": 2}) == 2
        assert await host.call("shout_shout", {"text": "hi"}) == "HI"
        results = await asyncio.gather(
            *(host.call("wallet_earn", {"user": "bob", "coins": 1}) for _ in range(100))
        )
        assert sorted(results) == list(range(1, 101))
        with pytest.raises(ToolCallError, match="unknown tool 'wallet_spend'"):
            await host.call("wallet_spend", {"user": "ann"})
        with pytest.raises(ToolCallError, match="coins"):
            await host.call("wallet_earn", {"user": "ann", "coins": "many"})
        (info,) = [i for i in host.list() if i.name == "wallet"]
        assert info.instances == 2 and info.key == "user" and info.durability == "turn"
    async with Host(state=tmp_path / "state.db") as host:
        await host.load(Wallet)
        assert await host.call("wallet_earn", {"user": "bob", "coins": 0}) == 100  # durable across hosts


async def test_load_options_override_what_the_component_declares() -> None:
    async with Host(max_call_seconds=None) as host:
        await host.load(Wallet, LoadOptions(name="purse", durability="memory"))
        assert await host.call("purse_earn", {"user": "a", "coins": 1}) == 1
        assert [i.name for i in host.list()] == ["purse"]
        await host.load(shout, LoadOptions(name="purse"))  # the same name replaces the component
        assert [i.tools for i in host.list()] == [["purse_shout"]]
        with pytest.raises(ToolCallError, match="unknown tool"):
            await host.call("purse_earn", {"user": "a", "coins": 1})
        await host.unload("purse")
        assert host.list() == []


def test_component_names_are_snake_case() -> None:
    assert snake_case("TickAggregator") == "tick_aggregator"
    assert snake_case("HTTPCache") == "http_cache"
    assert snake_case("notes-v2") == "notes_v2"


def test_a_keyed_component_must_be_stateful() -> None:
    with pytest.raises(ComponentError, match="stateful=True"):

        @component(key="user")
        class Loose(Stateful):
            @tool
            def f(self, user: str) -> str:
                return user

        from statefulmcp.components import spec_from_class

        spec_from_class(Loose, "test")


async def test_an_unloaded_instance_lets_go_of_its_object_at_once() -> None:
    """Without waiting for the cyclic collector: a Wasm instance's object holds its linear memory."""
    made: list[weakref.ref[Any]] = []

    @component(stateful=True, key="k")
    class Held(Stateful):
        def __init__(self) -> None:
            made.append(weakref.ref(self))

        @tool
        async def hi(self, k: str) -> str:
            return k

    gc.disable()
    try:
        async with Host(max_call_seconds=None) as host:
            await host.load(Held)
            assert await host.call("held_hi", {"k": "a"}) == "a"
            await host.unload("held")
            assert [ref() is None for ref in made] == [True]
    finally:
        gc.enable()


def test_state_view_tracks_changes_and_rolls_back() -> None:
    view = StateView({"a": 1})
    view["b"] = [1, 2]
    del view["a"]
    assert dict(view) == {"b": [1, 2]}
    assert view.changes() == {"a": DELETED, "b": "[1,2]"}
    view.rollback()
    assert dict(view) == {"a": 1} and not view.dirty
    view["bad"] = float("nan")
    with pytest.raises(StateValueError, match=r"self.state\['bad'\]"):
        view.changes()


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///rel/state.db", Path("rel/state.db")),
        ("sqlite:////abs/state.db", Path("/abs/state.db")),
        ("plain/state.db", Path("plain/state.db")),
        (None, Path(".statefulmcp/state.db")),
    ],
)
def test_state_urls_name_files(url: str | None, path: Path) -> None:
    assert store_path(url) == path


def test_unsupported_state_urls_are_refused() -> None:
    with pytest.raises(StoreError, match="unsupported store"):
        store_path("redis://localhost")


_writing = threading.Event()
_release = threading.Event()


@component(stateful=True, durability="memory")
class Board(Stateful):
    def __init__(self) -> None:
        self.ready = False

    @tool
    async def wait_ready(self) -> bool:
        await self.wait_until(lambda: self.ready, timeout=30)
        return True

    @tool
    async def slow_write(self, value: int) -> int:
        """Writes, then holds the turn (uncommitted) until the test releases it."""
        self.state["v"] = value
        _writing.set()
        await asyncio.to_thread(_release.wait, 30)
        return int(self.state["v"])

    @tool
    async def read(self) -> int | None:
        return self.state.get("v")


async def test_cancelling_a_parked_wait_never_undoes_another_turns_writes() -> None:
    async with Host() as host:
        await host.load(Board)
        waiter = asyncio.create_task(host.call("board_wait_ready"))
        async with asyncio.timeout(30):
            while host.list()[0].details["waiters"] != 1:
                await asyncio.sleep(0.005)
        writer = asyncio.create_task(host.call("board_slow_write", {"value": 7}))
        await asyncio.to_thread(_writing.wait, 30)  # the writer holds the turn, mid-body, uncommitted
        waiter.cancel()
        async with asyncio.timeout(30):
            while host.list()[0].details["waiters"] != 0:  # the cancellation reached the instance
                await asyncio.sleep(0.005)
        _release.set()
        assert await writer == 7
        assert await host.call("board_read") == 7
        assert host.list()[0].details["waiters"] == 0


class Address(BaseModel):
    street: str
    city: str


@component(stateful=True)
class Mailer(Stateful):
    @tool
    async def send(self, to: Address, text: str) -> str:
        return f"{to.city}: {text}"

    @tool(input_schema={"type": "object", "properties": {"raw": {"type": "string"}}, "required": ["raw"]})
    async def raw(self, raw: str) -> str:
        return raw


def test_input_schemas_are_json_schema_2020_12_and_a_hand_written_one_is_served_as_given() -> None:
    (spec,) = specs_from_object(Mailer)
    tools = {t.name: t for t in spec.tools}
    generated = tools["send"].input_schema
    assert generated["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert generated["properties"]["to"] == {"$ref": "#/$defs/Address"}
    assert set(generated["$defs"]["Address"]["properties"]) == {"street", "city"}
    assert generated["additionalProperties"] is False
    assert tools["raw"].input_schema == {
        "type": "object",
        "properties": {"raw": {"type": "string"}},
        "required": ["raw"],
    }
    with pytest.raises(ComponentError, match="must be a JSON Schema object"):
        tool(input_schema={"type": "string"})
