"""Resumable streams: a 2025-11-25 client whose SSE stream drops reconnects with Last-Event-ID
and gets what it missed, the result of a long-poll that finished while it was away included.

A TCP proxy between the official client and the server makes the drop real and deterministic:
it cuts every connection (as a network change or a proxy timeout would), holds the client's
reconnection until the test lets it through, and shows the test the reconnection's request.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import COMPONENTS, http_session, running, start_server, value
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ClientMessageMetadata
from mcp_types import CallToolRequest, CallToolRequestParams, CallToolResult

from statefulmcp.transport.events import EventBounds, EventLog

pytestmark = pytest.mark.anyio

GATE = COMPONENTS / "resume_gate.py"


class Proxy:
    """Forwards TCP connections to `upstream`; `cut()` drops them all, and while `holding` a new
    connection's request is read and kept until `release()`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.holding = False
        self.held: list[bytes] = []
        """The request heads of the connections held so far."""
        self._changed = asyncio.Event()
        self._released = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/mcp"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        self.holding = True
        self._released = asyncio.Event()

    def release(self) -> None:
        self.holding = False
        self._released.set()

    async def held_request(self, matches: Callable[[bytes], bool], seconds: float = 30) -> bytes:
        """The head of the first held request that `matches`, once it arrives."""
        with anyio.fail_after(seconds):
            while True:
                for head in self.held:
                    if matches(head):
                        return head
                await self._changed.wait()
                self._changed = asyncio.Event()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._forward(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        head = b""
        try:
            if self.holding:
                head = await reader.readuntil(b"\r\n\r\n")
                self.held.append(head)
                self._changed.set()
                await self._released.wait()
            host, port = re.sub(r"^http://|/mcp$", "", self.upstream).rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self._writers.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.transport.abort()


def _resuming(head: bytes) -> str | None:
    """The Last-Event-ID of a request resuming a call's stream (not the standalone GET stream)."""
    match = re.search(rb"(?im)^last-event-id: *(\S+)", head)
    if match is None or b"_GET_stream" in match.group(1):
        return None
    return match.group(1).decode()


def _progressing() -> tuple[anyio.Event, Any]:
    """A progress callback, and the event it sets on the first progress: the call is running."""
    started = anyio.Event()

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    return started, progress


async def _until(check: Callable[[], Any], seconds: float = 30) -> None:
    """Wait until `await check()` is true (a condition on the server, asked again and again)."""
    with anyio.fail_after(seconds):
        while not await check():
            await anyio.sleep(0.05)


async def _long_poll_failing(session: ClientSession, progress: Any, failure: list[BaseException]) -> None:
    """Call the gate's long-poll, keeping the MCP error it is expected to end with."""
    try:
        await session.call_tool("gate_wait_open", {}, progress_callback=progress)
    except MCPError as exc:
        failure.append(exc)


def _call(name: str, arguments: dict[str, Any] | None = None) -> CallToolRequest:
    return CallToolRequest(params=CallToolRequestParams(name=name, arguments=arguments or {}))


async def test_a_stream_dropped_during_a_long_poll_resumes_and_gets_the_result(tmp_path: Path) -> None:
    with running(GATE, tmp=tmp_path) as server:
        async with (
            Proxy(server.url) as proxy,
            http_session(proxy.url) as away,
            http_session(server.url) as other,
        ):
            result: list[CallToolResult] = []
            waiting, progress = _progressing()
            async with anyio.create_task_group() as tg:

                async def long_poll() -> None:
                    result.append(await away.call_tool("gate_wait_open", {}, progress_callback=progress))

                tg.start_soon(long_poll)
                with anyio.fail_after(30):
                    await waiting.wait()  # the call runs, its stream open through the proxy

                proxy.hold()
                proxy.cut()
                resumed = await proxy.held_request(lambda head: _resuming(head) is not None)
                assert re.fullmatch(r"\d+:\d+", _resuming(resumed) or "")

                # While the client is away, another session opens the gate: the long-poll answers.
                assert value(await other.call_tool("gate_open", {"by": "the other session"}))

                async def answered() -> bool:
                    return bool(value(await other.call_tool("gate_answered", {})))

                await _until(answered)
                assert not result

                proxy.release()
            assert value(result[0]) == "opened by the other session"
            # The session goes on over the same proxy, as if nothing had happened.
            assert value(await away.call_tool("gate_answered", {})) is True


async def _finished_call_token(session: Any, name: str, arguments: dict[str, Any]) -> tuple[list[str], Any]:
    tokens: list[str] = []

    async def token(value: str) -> None:
        tokens.append(value)

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        pass  # asking for progress makes `gate_chatty` send its events

    result = await session.send_request(
        _call(name, arguments),
        CallToolResult,
        metadata=ClientMessageMetadata(on_resumption_token_update=token),
        progress_callback=progress,
    )
    return tokens, result


async def _resume(session: Any, token: str) -> CallToolResult:
    with anyio.fail_after(30):
        result: CallToolResult = await session.send_request(
            _call("gate_chatty", {"n": 0}),
            CallToolResult,
            metadata=ClientMessageMetadata(resumption_token=token),
        )
    return result


async def test_a_session_can_replay_its_own_finished_call_but_not_another_sessions(tmp_path: Path) -> None:
    with running(GATE, tmp=tmp_path) as server:
        async with http_session(server.url) as owner, http_session(server.url) as stranger:
            tokens, first = await _finished_call_token(owner, "gate_chatty", {"n": 3})
            assert value(first) == 3
            # Both sessions' first call has the same request id; the stranger still gets nothing.
            _, mine = await _finished_call_token(stranger, "gate_chatty", {"n": 1})
            assert value(mine) == 1

            assert value(await _resume(owner, tokens[0])) == 3
            with pytest.raises(MCPError, match="not known to this session") as refused:
                await _resume(stranger, tokens[0])
            assert "send the request again" in str(refused.value)


async def test_resuming_from_an_evicted_event_gets_an_error_not_a_hang(tmp_path: Path) -> None:
    with running(GATE, "--max-events-per-stream", "3", tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            tokens, result = await _finished_call_token(session, "gate_chatty", {"n": 10})
            assert value(result) == 10
            with pytest.raises(MCPError, match="expired") as refused:
                await _resume(session, tokens[0])
            assert "at most 10000 in all and 3 per stream" in str(refused.value)
            # The newest events are still there: resuming from one of them answers.
            assert value(await _resume(session, tokens[-2])) == 10
            with pytest.raises(MCPError, match="not known to this session"):
                await _resume(session, "not-an-event-id")


async def test_after_a_restart_a_resuming_call_is_told_its_session_is_gone(tmp_path: Path) -> None:
    """Sessions do not survive a restart (the SDK keeps them in memory), so neither can their
    streams: the resuming client hears 404 for its session and its call fails, it does not wait."""
    server = start_server(GATE, tmp=tmp_path)
    try:
        async with Proxy(server.url) as proxy, http_session(proxy.url) as away:
            failure: list[BaseException] = []
            waiting, progress = _progressing()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_long_poll_failing, away, progress, failure)
                with anyio.fail_after(30):
                    await waiting.wait()
                proxy.hold()
                proxy.cut()
                await proxy.held_request(lambda head: _resuming(head) is not None)
                server.stop(signal.SIGKILL)
                server = start_server(GATE, tmp=tmp_path)
                proxy.upstream = server.url
                proxy.release()
            assert "reconnection attempts were exhausted" in str(failure[0])
    finally:
        server.stop()


async def test_a_2026_stream_is_not_resumable_and_dropping_it_cancels_the_call(tmp_path: Path) -> None:
    with running(GATE, tmp=tmp_path) as server:
        async with (
            Proxy(server.url) as proxy,
            http_session(proxy.url, mode="modern") as away,
            http_session(server.url) as other,
        ):
            failure: list[BaseException] = []
            waiting, progress = _progressing()
            async with anyio.create_task_group() as tg:
                tg.start_soon(_long_poll_failing, away, progress, failure)
                with anyio.fail_after(30):
                    await waiting.wait()
                proxy.cut()

            assert "SSE stream ended without a response" in str(failure[0])

            async def no_waiters() -> bool:
                listed = value(await other.call_tool("list_components", {}))["components"]
                return all(entry.get("waiters", 0) == 0 for entry in listed)

            await _until(no_waiters)  # the server cancelled the call when its stream closed
            assert value(await other.call_tool("gate_open", {"by": "nobody"}))
            assert value(await other.call_tool("gate_answered", {})) is False


def _log(bounds: EventBounds, clock: list[float]) -> tuple[EventLog, Any]:
    events = EventLog(bounds, clock=lambda: clock[0])
    return events, events.view("session")


async def _replayed(view: Any, event_id: str) -> list[Any]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message.message)

    with anyio.fail_after(5):
        await view.replay_events_after(event_id, send)
    return sent


def _note(n: int) -> Any:
    from mcp_types import JSONRPCNotification

    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": n})


def _answer(request_id: int) -> Any:
    from mcp_types import JSONRPCResponse

    return JSONRPCResponse(jsonrpc="2.0", id=request_id, result={})


async def test_the_total_bound_evicts_the_oldest_event_of_any_session() -> None:
    clock = [0.0]
    events, first = _log(EventBounds(max_events=3, max_per_stream=100, retention_seconds=60), clock)
    second = events.view("another session")
    oldest = await first.store_event("1", _note(0))
    kept = await first.store_event("1", _note(1))
    await second.store_event("1", _note(2))
    await first.store_event("1", _answer(1))
    assert len(events) == 3
    assert await _replayed(first, kept) == [_answer(1)]
    refused = await _replayed(first, oldest)
    assert refused[0].error.message.startswith(f"event {oldest!r} is not known")
    assert refused[0].id == 1  # the error answers the call whose stream it was


async def test_the_per_stream_bound_evicts_that_streams_oldest_events_only() -> None:
    clock = [0.0]
    _, view = _log(EventBounds(max_events=100, max_per_stream=2, retention_seconds=60), clock)
    other = await view.store_event("7", _note(0))
    await view.store_event("7", _answer(7))
    ids = [await view.store_event("1", _note(n)) for n in range(3)]
    await view.store_event("1", _answer(1))
    assert (await _replayed(view, ids[0]))[0].error.code == -32001
    assert (await _replayed(view, ids[1]))[0].error.code == -32001
    assert await _replayed(view, ids[2]) == [_answer(1)]
    assert await _replayed(view, other) == [_answer(7)]  # stream 7 kept its events


async def test_events_older_than_the_retention_are_gone() -> None:
    clock = [0.0]
    events, view = _log(EventBounds(max_events=100, max_per_stream=100, retention_seconds=10), clock)
    old = await view.store_event("1", _note(0))
    clock[0] = 6.0
    young = await view.store_event("1", _note(1))
    await view.store_event("1", _answer(1))
    clock[0] = 11.0
    assert (await _replayed(view, old))[0].error.code == -32001
    assert await _replayed(view, young) == [_answer(1)]
    assert len(events) == 2


async def test_a_replay_waits_for_the_answer_that_is_stored_after_it_began() -> None:
    _, view = _log(EventBounds(), [0.0])
    priming = await view.store_event("1", None)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message.message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(view.replay_events_after, priming, send)
        await anyio.wait_all_tasks_blocked()
        assert sent == []
        await view.store_event("1", _note(1))
        await view.store_event("1", _answer(1))
    assert sent == [_note(1), _answer(1)]


async def test_a_session_that_ends_drops_its_events_and_ends_its_replays() -> None:
    events, view = _log(EventBounds(), [0.0])
    priming = await view.store_event("1", None)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message.message)

    async with anyio.create_task_group() as tg:
        tg.start_soon(view.replay_events_after, priming, send)
        await anyio.wait_all_tasks_blocked()
        events.session_ended("session")
    assert "the session ended" in sent[0].error.message
    assert len(events) == 0


async def test_the_standalone_stream_resumed_from_a_lost_event_goes_on_live() -> None:
    """Nothing waits on the GET stream, so an evicted id there is no error: it goes on from now
    (ending it would have the client reopen it with the same id again and again)."""
    _, view = _log(EventBounds(), [0.0])
    assert await view.replay_events_after("1:_GET_stream", _nothing) == "_GET_stream"


async def _nothing(message: Any) -> None:
    raise AssertionError(f"nothing should be sent, got {message}")


async def test_age_does_not_take_the_place_a_running_call_resumes_from() -> None:
    """A long-poll's stream may carry only its priming event until it answers, however long
    that takes: the client must still be able to resume from it."""
    clock = [0.0]
    events, view = _log(EventBounds(max_events=100, max_per_stream=100, retention_seconds=10), clock)
    priming = await view.store_event("1", None)
    finished = await view.store_event("2", None)
    await view.store_event("2", _answer(2))
    clock[0] = 100.0
    await view.store_event("3", None)
    assert (await _replayed(view, finished))[0].error.code == -32001
    await view.store_event("1", _answer(1))
    assert await _replayed(view, priming) == [_answer(1)]
    assert len(events) == 3
