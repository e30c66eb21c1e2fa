"""Questions tools ask their caller's client (`ctx.elicit`, `ctx.sample`), in each protocol era.

2025-11-25 (HTTP with a session, and stdio): a server-to-client request on the call's own stream
(`session.send_request` with `related_request_id`), answered while the call's request is open.

2026-07-28 has no server-to-client requests: the call answers `InputRequiredResult` carrying the
question and a `request_state`, and the client retries the same `tools/call` with the answer. A
stateful tool must not run its first half again (it is committed), so the tool's coroutine stays
parked meanwhile: every 2026-07-28 call runs as a task owned here (`run`), `request_state` names
the parked call (192 random bits, which the SDK's `RequestStateBoundary` seals to the tool, its
arguments and the caller), and the retry (`resume`) hands the answer to it and waits for the
call's result or its next question. Each round gets a fresh name, so a state is good for one
retry.

Bounded (invariant 10): at most `max_questions` questions are open host-wide (a question past it
is refused before the turn is released), and each waits at most `answer_timeout` seconds, after
which the tool's `ctx.elicit` raises, so it can clean up and its call ends. `stop` (the start of
a drain) fails every open question at once; `aclose` cancels and awaits the calls still running.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from mcp.server import ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageResult,
    ElicitResult,
    InputRequiredResult,
    InputResponse,
)

from statefulmcp._errors import ToolCallError
from statefulmcp.context import Question, missing_capability

log = logging.getLogger("statefulmcp.transport")

MAX_QUESTIONS = 1000
"""Questions open to clients at once, host-wide, by default (`--max-questions`)."""

ANSWER_TIMEOUT = 600.0
"""How long a question waits for its client's answer by default (`--answer-timeout`)."""

_KEY = "statefulmcp"
"""The key of the one question a parked call has open, in `input_requests` / `input_responses`."""


@dataclass(eq=False)
class Exchange:
    """One 2026-07-28 call that may park: its task, and the question it has open, if any."""

    tool: str
    caller: Any
    """The call's `_RequestCaller`, pointed at each round's request in turn (`rebind`)."""
    call: asyncio.Task[CallToolResult] | None = None
    question: Question | None = None
    answer: asyncio.Future[InputResponse] | None = None
    asked: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    """Set when the call asks; the round waiting for the call then answers `InputRequiredResult`."""
    name: str | None = None
    """The `request_state` naming it while it is parked (a fresh one each round)."""


class Questions:
    """The questions open to clients, host-wide, and the 2026-07-28 calls that may park on one."""

    def __init__(self, *, max_questions: int = MAX_QUESTIONS, answer_timeout: float = ANSWER_TIMEOUT) -> None:
        self.max_questions = max_questions
        self.answer_timeout = answer_timeout
        self._open = 0
        self._asking: set[asyncio.Task[Any]] = set()
        self._parked: dict[str, Exchange] = {}
        self._calls: set[asyncio.Task[CallToolResult]] = set()
        self._stopped: str | None = None

    # -- asking (the tool's side) -----------------------------------------------------------

    def refusal(self, capabilities: ClientCapabilities | None, question: Question) -> ToolCallError | None:
        """Why `question` cannot be asked now; read from the tool's loop, so it only reads."""
        if self._stopped is not None:
            return ToolCallError(self._stopped)
        missing = missing_capability(capabilities, question)
        if missing is not None:
            return missing
        if self._open >= self.max_questions:
            return self._full()
        return None

    def _full(self) -> ToolCallError:
        return ToolCallError(
            f"{self.max_questions} questions to clients are open already (--max-questions); retry later, "
            "or raise the bound"
        )

    async def ask(
        self, ctx: ServerRequestContext[Any], exchange: Exchange | None, question: Question
    ) -> InputResponse:
        """Ask the client of `ctx` (the call's current request) and wait for its answer.

        `exchange` is the 2026-07-28 call asking (its question then parks it), None for a
        handshake-era call (a server-to-client request). Raises `ToolCallError` without an answer.
        """
        if self._stopped is not None:
            raise ToolCallError(self._stopped)
        if self._open >= self.max_questions:
            raise self._full()
        me = asyncio.current_task()
        assert me is not None
        self._open += 1
        self._asking.add(me)
        try:
            async with asyncio.timeout(self.answer_timeout):
                if exchange is None:
                    return await _request(ctx, question)
                return await self._park(exchange, question)
        except TimeoutError:
            raise ToolCallError(
                f"the client did not answer within {self.answer_timeout:g} s (--answer-timeout); the "
                "question was withdrawn"
            ) from None
        except MCPError as exc:
            raise ToolCallError(f"the client did not answer the question: {exc.error.message}") from None
        except asyncio.CancelledError:
            if self._stopped is None:
                raise
            me.uncancel()
            raise ToolCallError(self._stopped) from None
        finally:
            self._open -= 1
            self._asking.discard(me)

    async def _park(self, exchange: Exchange, question: Question) -> InputResponse:
        answer: asyncio.Future[InputResponse] = asyncio.get_running_loop().create_future()
        exchange.question, exchange.answer = question, answer
        if not exchange.asked.done():
            exchange.asked.set_result(None)
        try:
            return await answer
        finally:
            exchange.question = exchange.answer = None
            if exchange.name is not None:
                self._parked.pop(exchange.name, None)
                exchange.name = None

    # -- rounds (the client's side, 2026-07-28) ---------------------------------------------

    async def run(
        self, exchange: Exchange, call: Coroutine[Any, Any, CallToolResult]
    ) -> CallToolResult | InputRequiredResult:
        """Run a 2026-07-28 call as a task owned here; answer its result, or its first question."""
        task = asyncio.ensure_future(call)
        exchange.call = task
        self._calls.add(task)
        task.add_done_callback(self._ended)
        return await self._round(exchange)

    async def resume(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        """A retry with `request_state` (request `ctx`): hand its answer to the parked call, and
        wait for what follows."""
        name = params.request_state or ""
        exchange = self._parked.get(name)
        if exchange is None or exchange.tool != params.name:
            raise MCPError(
                INVALID_PARAMS,
                "this request_state names no call waiting for an answer: it was answered already, it "
                f"waited longer than {self.answer_timeout:g} s (--answer-timeout), or the server restarted. "
                "Call the tool again, without input_responses or request_state",
            )
        question, answer = exchange.question, exchange.answer
        assert question is not None and answer is not None
        response = (params.input_responses or {}).get(_KEY)
        expected = CreateMessageResult if isinstance(question, CreateMessageRequest) else ElicitResult
        if response is not None and not isinstance(response, expected):
            raise MCPError(  # still parked under the same name: the caller may send the right answer
                INVALID_PARAMS,
                f"input_responses[{_KEY!r}] does not answer {question.method}; send the "
                f"{expected.__name__} the client's handler returned",
            )
        del self._parked[name]
        exchange.name = None
        exchange.caller.rebind(ctx)
        if response is None:
            return self._input_required(exchange)  # asked again, under a fresh name
        exchange.asked = asyncio.get_running_loop().create_future()
        if not answer.done():
            answer.set_result(response)
        return await self._round(exchange)

    async def _round(self, exchange: Exchange) -> CallToolResult | InputRequiredResult:
        """Wait for the call to end (its result) or to ask (its question)."""
        call = exchange.call
        assert call is not None
        try:
            either: set[asyncio.Future[Any]] = {call, exchange.asked}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            call.cancel()  # the client cancelled this round's request: the call ends with it
            raise
        if call.done():
            return call.result()
        return self._input_required(exchange)

    def _input_required(self, exchange: Exchange) -> InputRequiredResult:
        question = exchange.question
        assert question is not None
        name = secrets.token_urlsafe(24)
        exchange.name = name
        self._parked[name] = exchange
        return InputRequiredResult(input_requests={_KEY: question}, request_state=name)

    def _ended(self, task: asyncio.Task[CallToolResult]) -> None:
        self._calls.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("a call that asked its client ended with %r", task.exception())

    # -- life -------------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Fail every open question at once (a drain begins) and refuse new ones."""
        self._stopped = reason
        for task in list(self._asking):
            task.cancel()

    async def aclose(self) -> None:
        """Cancel the 2026-07-28 calls still running and wait for them."""
        self.stop(self._stopped or "the server is shutting down; call the tool again after it restarts")
        calls = list(self._calls)
        for task in calls:
            task.cancel()
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)


async def _request(ctx: ServerRequestContext[Any], question: Question) -> InputResponse:
    """A server-to-client request on the call's own stream (the handshake eras)."""
    metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
    if isinstance(question, CreateMessageRequest):
        return await ctx.session.send_request(question, CreateMessageResult, metadata=metadata)
    return await ctx.session.send_request(question, ElicitResult, metadata=metadata)
