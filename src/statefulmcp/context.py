"""The caller's side of one tool call, for the tool: log messages and progress sent back to it.

A tool asks for it by declaring a parameter annotated `Context`; the host leaves that parameter
out of the input schema and passes the `Context` of the call in progress. The transport makes
one per call (`Caller` is what it sends through) and sets it with `begin`; the engine carries it
into the turn with the rest of the caller's context variables.

A stateful tool runs on the engine loop while the SDK's session belongs to the transport loop,
so each message is posted there through the loops' mailboxes (`engine.mailbox`) and the tool
resumes once it is sent: the SDK is only ever called on its own loop, and a tool's messages
reach the caller in order and before its reply.

A tool may also ask its caller's client something (`elicit`: the user fills in a form;
`sample`: the client's LLM completes a conversation). The answer may take minutes, so a
stateful call gives up its instance's turn meanwhile, exactly as `wait_until` does: what it wrote
so far is committed before the question leaves, other calls run, and the answer resumes the
call as a new turn. How the question travels depends on the caller's protocol era; that is the
transport's business (`Caller.ask`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar, get_args, overload

from mcp.server.elicitation import render_elicitation_schema
from mcp_types import (
    ClientCapabilities,
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    ElicitationCapability,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    FormElicitationCapability,
    IncludeContext,
    InputResponse,
    LoggingLevel,
    ModelPreferences,
    SamplingCapability,
    SamplingMessage,
    TextContent,
)
from pydantic import BaseModel, ValidationError

from statefulmcp import instances
from statefulmcp._errors import ClientCapabilityError, ToolCallError
from statefulmcp.engine import mailbox

log = logging.getLogger("statefulmcp.context")

LEVELS: tuple[LoggingLevel, ...] = get_args(LoggingLevel)
"""The MCP log levels, least severe first."""


Question = ElicitRequest | CreateMessageRequest
"""What a tool may ask its client."""

B = TypeVar("B", bound=BaseModel)
M = TypeVar("M")
T = TypeVar("T")


class Caller(Protocol):
    """Where a call's messages go: the transport's side of one request, on the transport loop."""

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None: ...

    async def progress(self, progress: float, total: float | None, message: str | None) -> None: ...

    def refusal(self, question: Question) -> ToolCallError | None:
        """Why `question` cannot be asked (the client lacks the capability, too many are open),
        or None. Called on the tool's own loop before the turn is released: it only reads."""
        ...

    async def ask(self, question: Question) -> InputResponse:
        """Ask the client and return its answer; raises `ToolCallError` when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class Elicitation(Generic[M]):
    """The client's answer to `ctx.elicit`: what the user did and, on accept, what they entered."""

    action: Literal["accept", "decline", "cancel"]
    data: M | None = None
    """On accept: the content validated as the schema's model (with a dict schema, the content)."""
    content: dict[str, Any] | None = None
    """On accept: the content exactly as the client sent it."""

    @property
    def accepted(self) -> bool:
        return self.action == "accept"


class Context:
    """What a tool may tell its caller while it runs; declare `ctx: Context` to get one.

    `await ctx.log("info", "fetched 3 pages")` sends a `notifications/message` (dropped below the
    level the client set with `logging/setLevel`); `await ctx.report_progress(50, 100)` sends a
    `notifications/progress` (nothing when the caller sent no progress token). A call made
    in-process (`Host.call`) has no MCP caller, and both do nothing. Sending is best effort: a
    caller that went away costs the tool nothing.
    """

    __slots__ = ("_caller", "_loop", "reported")

    def __init__(self, caller: Caller | None = None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._caller = caller
        self._loop = loop
        self.reported = False
        """True once the tool reported progress itself (the transport's heartbeat then stays quiet)."""

    async def log(self, level: LoggingLevel, message: Any, *, logger: str | None = None) -> None:
        """Send `message` (text or any JSON value) to the caller at `level` ("debug" … "emergency")."""
        if level not in LEVELS:
            raise ToolCallError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
        caller = self._caller
        if caller is not None:
            await self._send(lambda: caller.log(level, message, logger))

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Tell the caller how far the call is (`progress` of `total`, which may be unknown)."""
        caller = self._caller
        if caller is not None:
            self.reported = True
            await self._send(lambda: caller.progress(progress, total, message))

    @overload
    async def elicit(self, message: str, schema: type[B]) -> Elicitation[B]: ...
    @overload
    async def elicit(self, message: str, schema: Mapping[str, Any]) -> Elicitation[dict[str, Any]]: ...
    async def elicit(self, message: str, schema: type[BaseModel] | Mapping[str, Any]) -> Elicitation[Any]:
        """Ask the user to fill in a form: `schema` is a pydantic model class (flat fields of
        str, int, float, bool or a `Literal`/enum; defaults and descriptions are shown) or a
        JSON schema as a dict (an object of primitive properties, as the spec allows: `enum`,
        `oneOf` titled choices, arrays of enums). Returns the user's action and, on accept, the
        content (validated as the model; a dict schema's content is passed as the client sent it).

        A stateful call releases its instance's turn while the user answers (see the module
        docs). Raises `ClientCapabilityError` before anything happens when the client did not
        declare form elicitation (or there is no client), and `ToolCallError` when no answer comes
        (the client failed, or did not answer within the server's answer timeout).
        """
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            requested = render_elicitation_schema(schema)
        elif isinstance(schema, Mapping):
            requested = _checked_schema(schema)
        else:
            raise TypeError(
                f"ctx.elicit takes a pydantic model class or a JSON schema dict, not {type(schema).__name__}"
            )
        question = ElicitRequest(params=ElicitRequestFormParams(message=message, requested_schema=requested))
        answer = await self._ask(question, "ctx.elicit")
        if not isinstance(answer, ElicitResult):
            raise ToolCallError(
                "the client answered an elicitation with something else; nothing was elicited"
            )
        if answer.action != "accept":
            return Elicitation(answer.action)
        if answer.content is None:
            raise ToolCallError("the client accepted the elicitation but sent no content")
        content = dict(answer.content)
        if not isinstance(schema, type):
            return Elicitation("accept", content, content)
        try:
            return Elicitation("accept", schema.model_validate(content), content)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(form)'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolCallError(
                f"the client accepted the elicitation with content that does not fit its schema ({problems})"
            ) from None

    async def sample(
        self,
        messages: str | Sequence[str | SamplingMessage],
        *,
        max_tokens: int,
        system_prompt: str | None = None,
        temperature: float | None = None,
        stop_sequences: list[str] | None = None,
        model_preferences: ModelPreferences | None = None,
        include_context: IncludeContext | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> CreateMessageResult:
        """Ask the client's LLM to continue a conversation (`sampling/createMessage`), as the SDK's
        `create_message` does: `messages` is a prompt, or a list of messages (a str is a user
        message). Returns the SDK's `CreateMessageResult` (`result.content.text` for text).

        Released turn and errors as for `elicit`; the capability is `sampling`.
        """
        listed = [messages] if isinstance(messages, str) else list(messages)
        question = CreateMessageRequest(
            params=CreateMessageRequestParams(
                messages=[_message(m) for m in listed],
                max_tokens=max_tokens,
                system_prompt=system_prompt,
                temperature=temperature,
                stop_sequences=stop_sequences,
                model_preferences=model_preferences,
                include_context=include_context,
                metadata=metadata,
            )
        )
        answer = await self._ask(question, "ctx.sample")
        if not isinstance(answer, CreateMessageResult):
            raise ToolCallError(
                "the client answered a sampling request with something else; nothing was sampled"
            )
        return answer

    async def _ask(self, question: Question, what: str) -> InputResponse:
        """Ask the caller's client, releasing the turn of the instance the call is in meanwhile."""
        caller = self._caller
        if caller is None:
            raise ClientCapabilityError(
                f"{what} needs an MCP client to answer, and this call has none (it was made in-process, "
                "with Host.call); call the tool through an MCP client",
                required_capabilities(question),
            )
        refused = caller.refusal(question)
        if refused is not None:
            raise refused
        instance = instances.current()
        if instance is None:
            return await self._start(lambda: caller.ask(question))
        return await instance.away_for(what, lambda: self._start(lambda: caller.ask(question)))

    def _start(self, work: Callable[[], Coroutine[Any, Any, T]]) -> asyncio.Future[T]:
        """Run `work` on the caller's loop (the SDK's); its outcome comes back on a future of this
        loop. The future ending first (the instance dropped, the call cancelled) cancels `work`."""
        here = asyncio.get_running_loop()
        target = self._loop or here
        outcome: asyncio.Future[T] = here.create_future()
        back, there = mailbox(here), mailbox(target)
        running: list[asyncio.Task[T]] = []  # touched on the caller's loop only
        settled: list[bool] = []  # touched on this loop only

        def settle(task: asyncio.Task[T]) -> None:
            settled.append(True)
            if outcome.done():
                return
            if task.cancelled():
                outcome.set_exception(
                    ToolCallError("the message to the client was withdrawn; no answer came")
                )
            elif (exc := task.exception()) is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(task.result())

        def finished(task: asyncio.Task[T]) -> None:
            _sending.discard(task)
            back.post(settle, task)

        def start() -> None:
            task = target.create_task(work())
            _sending.add(task)
            running.append(task)
            task.add_done_callback(finished)

        def stop() -> None:
            for task in running:
                task.cancel()

        def ended(_: asyncio.Future[T]) -> None:
            if not settled:
                there.post(stop)  # ended here first (dropped, cancelled): withdraw the work there

        there.post(start)
        outcome.add_done_callback(ended)
        return outcome

    async def _send(self, send: Callable[[], Coroutine[Any, Any, None]]) -> None:
        target = self._loop
        if target is None or target is asyncio.get_running_loop():
            await _quietly(send)
            return
        await self._start(lambda: _quietly(send))


_sending: set[asyncio.Task[Any]] = set()
"""Sends in flight on the transport loop, held so none is collected before it ends."""


def required_capabilities(question: Question) -> dict[str, object]:
    """The client capabilities `question` needs, as the spec writes them (`requiredCapabilities`)."""
    if isinstance(question, ElicitRequest):
        needed = ClientCapabilities(elicitation=ElicitationCapability(form=FormElicitationCapability()))
    else:
        needed = ClientCapabilities(sampling=SamplingCapability())
    return needed.model_dump(by_alias=True, mode="json", exclude_none=True)


def missing_capability(
    capabilities: ClientCapabilities | None, question: Question
) -> ClientCapabilityError | None:
    """The error for a client that did not declare what `question` needs, as the SDK decides it.

    A bare `elicitation: {}` (the only shape before modes existed) counts as form support.
    """
    if isinstance(question, ElicitRequest):
        elicitation = capabilities.elicitation if capabilities is not None else None
        if elicitation is not None and (elicitation.form is not None or elicitation.url is None):
            return None
        name, method = "form elicitation", "ctx.elicit"
    else:
        if capabilities is not None and capabilities.sampling is not None:
            return None
        name, method = "sampling", "ctx.sample"
    return ClientCapabilityError(
        f"the client did not declare the {name} capability, which {method} needs; use a client that "
        "supports it, or have the tool go on without asking",
        required_capabilities(question),
    )


def _checked_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A dict elicitation schema, if it is the flat object the spec allows (checked before asking)."""
    properties = schema.get("properties")
    if schema.get("type") != "object" or not isinstance(properties, Mapping):
        raise TypeError(
            'an elicitation schema must be {"type": "object", "properties": {...}} with primitive '
            "properties (string, number, integer, boolean, or an enum of them)"
        )
    return dict(schema)


def _message(message: str | SamplingMessage) -> SamplingMessage:
    if isinstance(message, str):
        return SamplingMessage(role="user", content=TextContent(type="text", text=message))
    return message


async def _quietly(send: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        await send()
    except Exception as exc:  # noqa: BLE001 - best effort: the caller may have gone; the call goes on
        log.debug("could not send a message to the caller: %s", exc)


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar("statefulmcp_context", default=None)
_DETACHED = Context()
"""The context of calls with no MCP caller (in-process): it sends nothing."""


def current() -> Context:
    """The context of the call in progress."""
    return _current.get() or _DETACHED


def begin(context: Context) -> None:
    """Make `context` the one of the call the running task serves, which ends with the task."""
    _current.set(context)
