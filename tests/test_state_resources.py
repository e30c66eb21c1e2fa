"""State as resources (`state_resource=True`) and `notifications/resources/updated`: a subscriber
hears once per turn that commits a change, after the commit, and never for a turn that raised."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import COMPONENTS, EXAMPLES, http_session, running, stdio_session, value
from mcp import ClientSession
from mcp.client.subscriptions import listen
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    PromptReference,
    ResourceTemplateReference,
    ResourceUpdatedNotification,
    TextResourceContents,
)

from statefulmcp import ComponentError, Host, LoadOptions, Stateful, ToolCallError, component, resource, tool
from statefulmcp.state_resources import LISTED
from statefulmcp.transport.updates import MAX_QUEUED, ResourceUpdates
from statefulmcp.updates import MAX_ANNOUNCED

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore:resources/(un)?subscribe is removed")]

WATCHED = COMPONENTS / "watched.py"
A, B = "state://ticker/A", "state://ticker/B"


class Updates:
    """What a client heard: the URIs of `notifications/resources/updated`, in order, each seen by
    `on_update` (a test's read) before the next is taken."""

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._changed = anyio.Event()

    async def __call__(self, message: object) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            self.heard(message.params.uri)

    def heard(self, uri: str) -> None:
        self.uris.append(uri)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, count: int, seconds: float = 10) -> list[str]:
        with anyio.fail_after(seconds):
            while len(self.uris) < count:
                await self._changed.wait()
        return list(self.uris)


@asynccontextmanager
async def watching(url: str, era: str, uris: list[str]) -> AsyncIterator[tuple[ClientSession, Updates]]:
    """A client of `era` subscribed to `uris`: by `resources/subscribe` (2025-11-25) or by
    `subscriptions/listen` (2026-07-28)."""
    updates = Updates()
    if era == "legacy":
        async with http_session(url, message_handler=updates) as session:
            for uri in uris:
                await session.subscribe_resource(uri)
            yield session, updates
        return
    async with (
        http_session(url, "modern") as session,
        listen(session, resource_subscriptions=uris) as stream,
        anyio.create_task_group() as group,
    ):

        async def take() -> None:
            async for event in stream:
                updates.heard(getattr(event, "uri", ""))

        group.start_soon(take)
        yield session, updates
        group.cancel_scope.cancel()


def state(contents: Any) -> Any:
    (item,) = contents
    assert isinstance(item, TextResourceContents) and item.mime_type == "application/json"
    return json.loads(item.text)


async def test_state_is_listed_templated_and_read_only_where_opted_in(tmp_path: Path) -> None:
    with running(WATCHED, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            await session.call_tool("ticker_add", {"symbol": "A", "price": 1.5})
            await session.call_tool("ticker_add", {"symbol": "B/x", "price": 2})
            await session.call_tool("diary_write", {"user": "ada", "text": "secret"})
            listed = {r.uri: r for r in (await session.list_resources()).resources}
            templates = {t.uri_template for t in (await session.list_resource_templates()).resource_templates}
            assert state((await session.read_resource(A)).contents) == {"prices": [1.5]}
            assert state((await session.read_resource("state://ticker/B%2Fx")).contents) == {"prices": [2]}
            assert state((await session.read_resource("state://board")).contents) == {}
            with pytest.raises(MCPError, match=r"ticker has no instance for symbol 'Z'") as missing:
                await session.read_resource("state://ticker/Z")
            assert missing.value.error.code == INVALID_PARAMS
            with pytest.raises(MCPError, match="not found"):
                await session.read_resource("state://diary/ada")
    assert {A, "state://ticker/B%2Fx", "state://board", "state://clock"} <= set(listed)
    assert listed[A].mime_type == "application/json"
    assert not any(uri.startswith("state://diary") for uri in listed)  # off by default: state is private
    assert "state://ticker/{symbol}" in templates
    assert not any(t.startswith("state://diary") for t in templates)


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_a_subscriber_hears_once_per_committing_turn_and_never_for_one_that_raised(
    tmp_path: Path, era: str
) -> None:
    with running(WATCHED, tmp=tmp_path) as server:
        async with watching(server.url, era, [A, B]) as (session, updates):
            for n in (1, 2):
                assert value(await session.call_tool("ticker_add", {"symbol": "A", "price": n})) == n
                assert await updates.until(n) == [A] * n
                # Heard after the commit: a read on hearing sees the new value.
                assert state((await session.read_resource(A)).contents) == {"prices": [1, 2][:n]}
            assert (await session.call_tool("ticker_fail", {"symbol": "A"})).is_error
            assert value(await session.call_tool("ticker_peek", {"symbol": "A"})) == 2  # no write
            await session.call_tool("ticker_add", {"symbol": "B", "price": 9})
            # Updates of one session arrive in commit order: B's, after A's two, and nothing between.
            assert await updates.until(3) == [A, A, B]
            assert state((await session.read_resource(A)).contents) == {"prices": [1, 2]}


async def test_declared_resources_of_the_instance_and_announced_ones_are_updated(tmp_path: Path) -> None:
    last, note, torn = "ticker://A/last", "ticker://A/notes/open", "ticker://A/notes/torn"
    with running(WATCHED, tmp=tmp_path) as server:
        async with watching(server.url, "legacy", [last, note, torn, "board://lines", "ticker://B/last"]) as (
            session,
            updates,
        ):
            await session.call_tool("ticker_add", {"symbol": "A", "price": 3})
            assert await updates.until(1) == [last]
            contents = (await session.read_resource(last)).contents[0]
            assert isinstance(contents, TextResourceContents) and contents.text == "3.0"
            await session.call_tool("ticker_fail", {"symbol": "A"})  # announced torn, then raised
            await session.call_tool("ticker_note", {"symbol": "A", "name": "open"})
            await session.call_tool("board_post", {"text": "hello"})
            assert await updates.until(3) == [last, note, "board://lines"]


@pytest.mark.parametrize("era", ["legacy", "modern"])
async def test_background_ticks_that_commit_are_heard(tmp_path: Path, era: str) -> None:
    with running(WATCHED, tmp=tmp_path) as server:
        async with watching(server.url, era, ["state://clock"]) as (session, updates):
            await session.call_tool("clock_ticks", {})  # activates it: it ticks three times
            assert await updates.until(3) == ["state://clock"] * 3
            assert state((await session.read_resource("state://clock")).contents) == {"ticks": 3}


async def test_a_client_watches_the_quote_example_as_the_docs_show(tmp_path: Path) -> None:
    with running(EXAMPLES / "quote.py", tmp=tmp_path) as server:
        async with http_session(server.url, "modern") as session:
            assert value(await session.call_tool("quote_open", {"symbol": "ACME"})) == 100.0
            async with listen(session, resource_subscriptions=["state://quote/ACME"]) as updates:
                with anyio.fail_after(30):
                    update = await updates.__anext__()
                read = state((await session.read_resource(getattr(update, "uri", ""))).contents)
    assert read["ticks"] >= 1 and isinstance(read["price"], float)


async def test_updates_over_stdio(tmp_path: Path) -> None:
    updates = Updates()
    async with stdio_session(WATCHED, cwd=tmp_path, message_handler=updates) as session:
        await session.subscribe_resource("state://board")
        await session.call_tool("board_post", {"text": "over stdio"})
        assert await updates.until(1) == ["state://board"]
        assert state((await session.read_resource("state://board")).contents) == {"lines": ["over stdio"]}


async def test_completions_offer_existing_keys_and_hooks(tmp_path: Path) -> None:
    with running(WATCHED, tmp=tmp_path) as server:
        async with http_session(server.url, "modern") as session:
            for symbol in ("ACME", "ABC", "XYZ"):
                await session.call_tool("ticker_add", {"symbol": symbol, "price": 1})
            await session.call_tool("diary_write", {"user": "ada", "text": "secret"})

            async def complete(ref: Any, name: str, typed: str) -> list[str]:
                return (await session.complete(ref, {"name": name, "value": typed})).completion.values

            state_ref = ResourceTemplateReference(type="ref/resource", uri="state://ticker/{symbol}")
            assert sorted(await complete(state_ref, "symbol", "A")) == ["ABC", "ACME"]
            notes = ResourceTemplateReference(type="ref/resource", uri="ticker://{symbol}/notes/{name}")
            assert sorted(await complete(notes, "symbol", "")) == ["ABC", "ACME", "XYZ"]
            assert await complete(notes, "name", "o") == ["open", "close"]  # the hook decides
            summary = PromptReference(type="ref/prompt", name="ticker_summary")
            assert await complete(summary, "symbol", "X") == ["XYZ"]
            with pytest.raises(MCPError, match="unknown resource template") as unknown:
                await complete(ResourceTemplateReference(type="ref/resource", uri="x://{y}"), "y", "")
            assert unknown.value.error.code == INVALID_PARAMS


async def test_state_reads_in_process_and_never_make_an_instance() -> None:
    async with Host() as host:
        await host.load(WATCHED)
        await host.call("ticker_add", {"symbol": "A", "price": 4})
        assert state((await host.read_resource(A)).contents) == {"prices": [4]}
        with pytest.raises(Exception, match="no instance for symbol 'Q'"):
            await host.read_resource("state://ticker/Q")
        assert [info.instances for info in host.list() if info.name == "ticker"] == [1]


async def test_state_resource_needs_a_stateful_component_with_public_keys() -> None:
    @component(stateful=True, handles=True, state_resource=True)
    class Secret:
        @tool
        def hi(self, session: str) -> str:
            return session

    @component(state_resource=True)
    class Stateless:
        @tool
        def hi(self) -> str:
            return "hi"

    @component(stateful=True)
    class Squatter(Stateful):
        @resource("state://squatter")
        def mine(self) -> str:
            return ""

    async with Host() as host:
        with pytest.raises(ComponentError, match="would list them to every client"):
            await host.load(Secret)
        with pytest.raises(ComponentError, match="not stateful"):
            await host.load(Stateless)
        with pytest.raises(ComponentError, match="the state:// scheme is the host's"):
            await host.load(Squatter)
        with pytest.raises(ComponentError, match="state_resource=1 is not valid"):
            LoadOptions(state_resource=1)  # type: ignore[arg-type]


def test_a_completion_hook_must_name_a_parameter_of_its_template() -> None:
    named: Callable[[str], list[str]] = lambda typed: [typed]  # noqa: E731

    @component
    class Typo:
        @resource("data://{id}", complete={"idd": named})
        def read(self, id: str) -> str:
            return id

    with pytest.raises(ComponentError, match="names 'idd', which is not a parameter"):
        Host()._specs_of(Typo, None)


async def test_listing_is_bounded_and_the_template_reaches_the_rest() -> None:
    @component(stateful=True, key="room", state_resource=True, durability="memory")
    class Rooms(Stateful):
        @tool
        def enter(self, room: str) -> None:
            self.state["in"] = True

    async with Host() as host:
        await host.load(Rooms)
        for n in range(LISTED + 5):
            await host.call("rooms_enter", {"room": f"r{n:03}"})
        listed = [r.uri for r in await host.state_resources()]
        (template,) = host.state_templates()
        last = await host.read_resource(f"state://rooms/r{LISTED + 4:03}")
    assert len(listed) == LISTED
    assert template.uri_template == "state://rooms/{room}" and f"at most {LISTED}" in (
        template.description or ""
    )
    assert state(last.contents) == {"in": True}


async def test_a_turn_announces_a_bounded_number_of_uris() -> None:
    @component(stateful=True)
    class Loud(Stateful):
        @tool
        def shout(self, n: int) -> None:
            for i in range(n):
                self.resource_updated(f"loud://{i}")

        @tool
        def typo(self) -> None:
            self.resource_updated("no scheme")

    async with Host() as host:
        await host.load(Loud)
        await host.call("loud_shout", {"n": MAX_ANNOUNCED})
        with pytest.raises(ToolCallError, match=f"at most {MAX_ANNOUNCED} updated resources"):
            await host.call("loud_shout", {"n": MAX_ANNOUNCED + 1})
        with pytest.raises(ToolCallError, match="needs a URI with a scheme"):
            await host.call("loud_typo", {})


async def test_a_subscriber_that_does_not_keep_up_never_holds_the_sender(
    caplog: pytest.LogCaptureFixture,
) -> None:
    published: list[str] = []
    release = asyncio.Event()

    class StuckBus:
        async def publish(self, event: Any) -> None:
            published.append(event.uri)
            await release.wait()  # a listener that never reads

        def subscribe(self, listener: Any) -> Callable[[], None]:
            return lambda: None

    updates = ResourceUpdates(StuckBus())
    with caplog.at_level(logging.WARNING, "statefulmcp.transport"):
        for n in range(MAX_QUEUED + 10):
            updates.updated((f"x://{n}",))  # returns at once, whatever the bus does
    release.set()
    with anyio.fail_after(10):
        while len(published) < MAX_QUEUED:
            await asyncio.sleep(0)
    await updates.aclose()
    # The queue held MAX_QUEUED; the ones past that were dropped, never waited for, and said once.
    assert published == [f"x://{n}" for n in range(MAX_QUEUED)]
    assert [r.getMessage() for r in caplog.records] == [
        f"dropping resource updates for subscriptions/listen: {MAX_QUEUED} are still waiting to be sent "
        "(a slow client)"
    ]
