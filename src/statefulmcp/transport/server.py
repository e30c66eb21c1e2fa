"""The MCP server: the official SDK's low-level `Server`, with the host behind its tool handlers.

Three choices keep the SDK's per-call overhead low (each is a known cost in `mcp` 2.3.0):
the tool list is built once per load/unload rather than per request; `get_tool_input_schema`
is given, so 2026-07-28 header validation does not run the whole `tools/list` handler on every
call; and the default OpenTelemetry middleware is dropped (it is a no-op without an exporter, but
still wraps every message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
import warnings
import weakref
from collections.abc import Coroutine, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.auth.provider import principal_components
from mcp.server.connection import Connection, allowed_log_levels
from mcp.server.context import CallNext, HandlerResult
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateBoundary, RequestStateSecurity, compact_json
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    ListenHandler,
    PromptsListChanged,
    ResourcesListChanged,
    ToolsListChanged,
)
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolRequestParams,
    CallToolResult,
    ClientCapabilities,
    CompleteRequestParams,
    CompleteResult,
    Completion,
    EmptyResult,
    GetPromptRequestParams,
    GetPromptResult,
    InputRequiredResult,
    InputResponse,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    LoggingLevel,
    LoggingMessageNotification,
    LoggingMessageNotificationParams,
    PaginatedRequestParams,
    Prompt,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    SetLevelRequestParams,
    SubscribeRequestParams,
    Tool,
    UnsubscribeRequestParams,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from statefulmcp import context
from statefulmcp._errors import ClientCapabilityError, HostStateError, ToolCallError, ToolInputError
from statefulmcp.cluster import FORWARDED, NOT_OWNER, PROOF, SESSION, Hop, NotOwner
from statefulmcp.cluster.relay import echo
from statefulmcp.components import tool_result_text
from statefulmcp.host import Host
from statefulmcp.transport.admin import ADMIN_TOOLS, admin_tools, caller_is_admin
from statefulmcp.transport.auth import has_scope
from statefulmcp.transport.questions import ANSWER_TIMEOUT, MAX_QUESTIONS, Exchange, Questions
from statefulmcp.transport.updates import ResourceUpdates

log = logging.getLogger("statefulmcp.transport")

_ENDING = "statefulmcp/session-end"
"""The `Connection.state` mark of a session whose end the host hears of (registered once)."""

_LOG_LEVEL = "statefulmcp/log-level"
"""The `Connection.state` entry of the least severe level its client asked for (`logging/setLevel`)."""

MAX_COMPLETIONS = 100
"""The most values one `completion/complete` answer carries (the spec's limit)."""

HEARTBEAT_SECONDS = 2.0
"""How often a call whose client sent a progress token hears that it is still running."""

R = TypeVar("R")


class _Server(Server[Any]):
    """The SDK server, advertising `listChanged` for tools, prompts and resources to handshake-era
    clients too."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options
            or NotificationOptions(tools_changed=True, prompts_changed=True, resources_changed=True),
            experimental_capabilities,
            extensions,
        )


class McpFrontend:
    """Serves a `Host` over MCP: tool listing and calls, admin tools, and change notifications."""

    def __init__(
        self,
        host: Host,
        *,
        allow_load: Path | None = None,
        max_questions: int = MAX_QUESTIONS,
        answer_timeout: float = ANSWER_TIMEOUT,
    ) -> None:
        self.host = host
        self.questions = Questions(max_questions=max_questions, answer_timeout=answer_timeout)
        """Elicitation and sampling questions open to clients, and the 2026-07-28 calls parked on one."""
        host.add_host_tools(admin_tools(host, allow_load))
        self.admin_scope: str | None = None
        """Set when HTTP requests carry verified tokens: the scope the admin tools then require."""
        self.trusted = False
        """Set over stdio: the caller is the process that started the server, and sees its paths."""
        self.default_session: str | None = None
        """The session of calls whose connection has none: over stdio, the one client's."""
        self.bus = InMemorySubscriptionBus()
        self.updates = ResourceUpdates(self.bus)
        # Handshake-era connections that may hear `notifications/tools/list_changed`; weak so a
        # closed connection goes away by itself.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._listing: ListToolsResult | None = None
        self._schemas: dict[str, dict[str, Any]] = {}
        with warnings.catch_warnings():
            # `logging/setLevel` is gone from 2026-07-28 on, which the SDK warns of when given a
            # handler; handshake-era clients still use it, and modern ones never send it.
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            self.server = _Server(
                "statefulmcp",
                version=_version(),
                get_tool_input_schema=self._input_schema,
                on_list_tools=self._list_tools,
                on_call_tool=self._call_tool,
                on_list_prompts=self._list_prompts,
                on_get_prompt=self._get_prompt,
                on_completion=self._complete,
                on_list_resources=self._list_resources,
                on_list_resource_templates=self._list_resource_templates,
                on_read_resource=self._read_resource,
                on_subscribe_resource=self._subscribe,
                on_unsubscribe_resource=self._unsubscribe,
                on_set_logging_level=self._set_logging_level,
                on_subscriptions_listen=ListenHandler(self.bus),
            )
        # The SDK's only default middleware is OpenTelemetry's ("drop it from this list to opt out",
        # says `Server.__init__`); the public list is replaced rather than filtered by a private class.
        # The SDK's request-state boundary seals the name of a parked call (`questions`) to the
        # tool, its arguments and the caller, under a key only this process holds; it touches
        # only results that ask for input, and retries that answer one.
        security = RequestStateSecurity(
            keys=[os.urandom(32)], ttl=answer_timeout + HEARTBEAT_SECONDS, bind_principal=_principal
        )
        self.server.middleware[:] = [
            self._track_sessions,
            RequestStateBoundary(security, default_audience="statefulmcp"),
        ]
        host.on_tools_changed(self._tools_changed)
        host.on_resources_updated(self.updates.updated)

    async def aclose(self) -> None:
        """Stop what the frontend started: resource updates still being sent, and the 2026-07-28
        calls still running (each is a task of `questions`)."""
        await self.questions.aclose()
        await self.updates.aclose()

    # -- listing ----------------------------------------------------------------------------

    def _build_listing(self) -> ListToolsResult:
        tools = []
        for name, entry in self.host.tools().items():
            spec = entry.spec
            tools.append(
                Tool(
                    name=name,
                    description=spec.description,
                    input_schema=spec.input_schema,
                    output_schema=spec.output_schema,
                )
            )
        self._schemas = {tool.name: tool.input_schema for tool in tools}
        return ListToolsResult(tools=tools)

    def _listing_now(self) -> ListToolsResult:
        if self._listing is None:
            self._listing = self._build_listing()
        return self._listing

    async def _list_tools(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return self._listing_now()

    def _input_schema(self, name: str) -> Mapping[str, Any] | None:
        self._listing_now()
        return self._schemas.get(name)

    # -- change notifications ---------------------------------------------------------------

    async def _track_sessions(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method == "notifications/initialized" and ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:
            # `ctx.session` is a per-request proxy; the connection behind it is what lives as long
            # as the client's session, and the SDK offers no public accessor for it.
            connection = _connection(ctx)
            if connection is not None:
                self._connections.add(connection)
        return await call_next(ctx)

    async def _tools_changed(self) -> None:
        self._listing = None
        await self.bus.publish(ToolsListChanged())
        await self.bus.publish(PromptsListChanged())
        await self.bus.publish(ResourcesListChanged())
        for connection in list(self._connections):
            try:
                await connection.send_tool_list_changed()
                await connection.send_prompt_list_changed()
                await connection.send_resource_list_changed()
            except Exception as exc:  # a client that went away must not stop the others  # noqa: BLE001 - best effort; the call goes on
                log.debug("could not notify a session of the tool change: %s", exc)
                self._connections.discard(connection)

    # -- prompts ----------------------------------------------------------------------------

    async def _list_prompts(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListPromptsResult:
        return ListPromptsResult(
            prompts=[
                Prompt(name=name, description=spec.description, arguments=list(spec.arguments))
                for name, spec in self.host.prompts().items()
            ]
        )

    def _begin(self, ctx: ServerRequestContext[Any]) -> Hop:
        """Make this request the caller of the work it runs (its `Context`), and say how it
        reached this replica."""
        hop = _hop(ctx)
        caller = _RequestCaller(ctx, self.questions, forwarded=hop.forwarded)
        context.begin(context.Context(caller, asyncio.get_running_loop()))
        return hop

    async def _get_prompt(
        self, ctx: ServerRequestContext[Any], params: GetPromptRequestParams
    ) -> GetPromptResult:
        hop = self._begin(ctx)
        try:
            return await self.host.get_prompt(
                params.name,
                params.arguments,
                session=self._session_of(ctx),
                forwarded=hop.forwarded,
                token=hop.token,
                proof=hop.proof,
                session_key=hop.session_key,
            )
        except NotOwner as exc:
            raise MCPError(INTERNAL_ERROR, str(exc), data={NOT_OWNER: True}) from None
        except ToolInputError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        except (ToolCallError, HostStateError) as exc:
            # `prompts/get` has no error result of its own, unlike a tool call.
            raise MCPError(INTERNAL_ERROR, str(exc)) from None

    async def _complete(
        self, ctx: ServerRequestContext[Any], params: CompleteRequestParams
    ) -> CompleteResult:
        """Candidates for a prompt's argument or a resource template's parameter: from its
        `complete` hook, or, for a keyed component's key, the keys that exist."""
        ref, argument = params.ref, params.argument
        try:
            if ref.type == "ref/prompt":
                values = await self.host.complete(ref.name, argument.name, argument.value)
            else:
                values = await self.host.complete_resource(ref.uri, argument.name, argument.value)
        except ToolInputError as exc:
            raise MCPError(INVALID_PARAMS, str(exc)) from None
        except (ToolCallError, HostStateError) as exc:
            raise MCPError(INTERNAL_ERROR, str(exc)) from None
        # The spec caps one answer at 100 values and says how many there were.
        return CompleteResult(
            completion=Completion(
                values=list(values[:MAX_COMPLETIONS]),
                total=len(values),
                has_more=len(values) > MAX_COMPLETIONS,
            )
        )

    # -- resources --------------------------------------------------------------------------

    async def _list_resources(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        return ListResourcesResult(
            resources=[
                *(
                    Resource(uri=r.uri, name=r.name, description=r.description, mime_type=r.mime_type)
                    for r in self.host.resources()
                    if not r.is_template
                ),
                *await self.host.state_resources(),
            ]
        )

    async def _list_resource_templates(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(
            resource_templates=[
                ResourceTemplate(
                    uri_template=r.uri, name=r.name, description=r.description, mime_type=r.mime_type
                )
                for r in self.host.resources()
                if r.is_template
            ]
            + list(self.host.state_templates())
        )

    async def _read_resource(
        self, ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        uri = params.uri
        hop = self._begin(ctx)
        try:
            return await self.host.read_resource(
                uri,
                session=self._session_of(ctx),
                forwarded=hop.forwarded,
                token=hop.token,
                proof=hop.proof,
                session_key=hop.session_key,
            )
        except NotOwner as exc:
            raise MCPError(INTERNAL_ERROR, str(exc), data={"uri": uri, NOT_OWNER: True}) from None
        except ToolInputError as exc:
            # The SDK's own resource server answers an unknown URI so too (the spec's -32602).
            raise MCPError(INVALID_PARAMS, str(exc), data={"uri": uri}) from None
        except (ToolCallError, HostStateError) as exc:
            raise MCPError(INTERNAL_ERROR, str(exc), data={"uri": uri}) from None

    async def _subscribe(self, ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        """Keep the URI on the connection, for the session's life: each commit that updates it
        sends `notifications/resources/updated` (see `transport.updates`)."""
        connection = _connection(ctx)
        if connection is not None:
            self.updates.subscribe(connection, params.uri)
        return EmptyResult()

    async def _unsubscribe(
        self, ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams
    ) -> EmptyResult:
        connection = _connection(ctx)
        if connection is not None:
            self.updates.unsubscribe(connection, params.uri)
        return EmptyResult()

    # -- logging ----------------------------------------------------------------------------

    async def _set_logging_level(
        self, ctx: ServerRequestContext[Any], params: SetLevelRequestParams
    ) -> EmptyResult:
        """Keep the level on the connection: it holds for the client's session, every call of it."""
        connection = _connection(ctx)
        if connection is not None:
            connection.state[_LOG_LEVEL] = params.level
        return EmptyResult()

    # -- calls ------------------------------------------------------------------------------

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        name = params.name
        arguments = params.arguments or {}
        if self.host.entry(name) is None:
            raise MCPError(
                INVALID_PARAMS, f"unknown tool {name!r}; call tools/list to see what this server offers"
            )
        admin = self.trusted or (self.admin_scope is not None and has_scope(ctx.request, self.admin_scope))
        caller_is_admin.set(admin)  # this request's own context: it ends with the request
        if self.admin_scope is not None and name in ADMIN_TOOLS and not admin:
            return tool_result_text(
                f"forbidden: {name} needs a token with the scope {self.admin_scope}; this one has only "
                "the scope to call tools",
                error=True,
            )
        try:
            if params.request_state is not None:
                return await self._resume(ctx, name, params)
            session = self._session_of(ctx)
            forwarded = _forwarded(ctx)
            caller = _RequestCaller(ctx, self.questions, forwarded=forwarded)
            context.begin(context.Context(caller, asyncio.get_running_loop()))
            if self.host.cluster is not None:
                call = self._call_replicated(ctx, name, arguments, session)
            else:
                call = self.host.call_result(name, arguments, session=session)
            if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS or forwarded:
                # The heartbeat runs where the caller is: a forwarded call's reaches it from the
                # replica that forwarded it (`_call_replicated`).
                wants = forwarded is None and _wants_progress(ctx)
                return await self._heartbeat(ctx, name, call) if wants else await call
            # From 2026-07-28 a question to the client ends this request (`questions`).
            caller.exchange = Exchange(name, caller)
            rounds = self.questions.run(caller.exchange, call)
            return await self._heartbeat(ctx, name, rounds) if _wants_progress(ctx) else await rounds
        except ClientCapabilityError as exc:
            raise MCPError(
                MISSING_REQUIRED_CLIENT_CAPABILITY, str(exc), data={"requiredCapabilities": exc.required}
            ) from None

    async def _resume(
        self, ctx: ServerRequestContext[Any], name: str, params: CallToolRequestParams
    ) -> CallToolResult | InputRequiredResult:
        """A 2026-07-28 retry answering a question: the parked call goes on (`questions.resume`)."""
        rounds = self.questions.resume(ctx, params)
        return await self._heartbeat(ctx, name, rounds) if _wants_progress(ctx) else await rounds

    def _session_of(self, ctx: ServerRequestContext[Any]) -> str | None:
        """The MCP session of a call: its connection's, if it has one (hearing once when it ends),
        else the default (stdio's one client); None for a sessionless client."""
        connection = _connection(ctx)
        if connection is None or connection.session_id is None:
            return self.default_session
        if _ENDING not in connection.state:
            # The SDK unwinds this stack however the session ends: its client's DELETE, eviction
            # by `sessions.SessionAdmission`, the idle timeout, or shutdown. Registered at the
            # session's first call, not at `notifications/initialized`, which a client may skip.
            connection.state[_ENDING] = True
            connection.exit_stack.push_async_callback(self.host.session_ended, connection.session_id)
        return connection.session_id

    async def _call_replicated(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any], session: str | None
    ) -> CallToolResult:
        """A call on a replica: it may have been forwarded here (then it is never forwarded
        again), and it may be forwarded on with the caller's own token.

        The heartbeat runs where the caller is, never on the owner of a forwarded call: the
        forwarding replica's heartbeat reaches the caller, and falls silent once the owner's tool
        reports progress itself (relayed to the caller); the owner's would come on top of it.
        """
        hop = _hop(ctx)
        return await self.host.call_result(
            name, arguments, forwarded=hop.forwarded, token=hop.token, session=session, proof=hop.proof
        )

    async def _heartbeat(self, ctx: ServerRequestContext[Any], name: str, work: Coroutine[Any, Any, R]) -> R:
        """Run a call, sending a progress notification every few seconds until it ends.

        A long-poll may wait minutes in silence; clients and proxies time out silent requests,
        so a caller that asked for progress (by sending a token) hears from us meanwhile.
        """
        call = asyncio.ensure_future(work)
        started = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=HEARTBEAT_SECONDS)
                if done:
                    return call.result()
                elapsed = time.monotonic() - started
                if context.current().reported:
                    continue  # the tool reports its own progress; ours would break its order
                try:
                    await ctx.session.report_progress(
                        elapsed, None, f"{name}: still running after {elapsed:.0f} s"
                    )
                except Exception as exc:  # progress is best effort; the call goes on  # noqa: BLE001 - best effort; the call goes on
                    log.debug("progress notification failed: %s", exc)
        finally:
            if not call.done():
                call.cancel()


class _RequestCaller:
    """The caller of one `tools/call`, as a tool's `Context` reaches it: on the request's stream.

    A 2026-07-28 call that asks its client spans several requests (each retry answers a
    question); it is pointed at the latest one (`rebind`), so what the tool sends goes there.
    """

    __slots__ = ("_capabilities", "_ctx", "_forwarded", "_questions", "exchange")

    def __init__(
        self, ctx: ServerRequestContext[Any], questions: Questions, *, forwarded: str | None = None
    ) -> None:
        self._ctx = ctx
        self._questions = questions
        self._forwarded = forwarded
        self._capabilities: ClientCapabilities | None = ctx.session.client_capabilities
        self.exchange: Exchange | None = None
        """The 2026-07-28 call this is the caller of (its questions park it); None before then."""

    def rebind(self, ctx: ServerRequestContext[Any]) -> None:
        self._ctx = ctx
        self._capabilities = ctx.session.client_capabilities

    def refusal(self, question: context.Question) -> ToolCallError | None:
        if self._forwarded is not None:
            return ToolCallError(
                f"this call was forwarded from the replica that received it ({self._forwarded}), and "
                f"questions to the client ({question.method}) are not relayed through forwards yet; the "
                "tool asked nothing. See docs/scaling.md"
            )
        if self.exchange is None and self._ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
            return ToolCallError(
                f"a 2026-07-28 client is asked ({question.method}) only by a tool call, not by a prompt "
                "or a resource; ask from a tool"
            )
        return self._questions.refusal(self._capabilities, question)

    async def ask(self, question: context.Question) -> InputResponse:
        return await self._questions.ask(self._ctx, self.exchange, question)

    async def log(self, level: LoggingLevel, data: Any, logger: str | None) -> None:
        ctx = self._ctx
        meta = ctx.params.get("_meta") if ctx.params else None
        # From 2026-07-28 the request's own `_meta` says which levels its client wants; before,
        # the SDK allows every level and the session's `logging/setLevel` decides.
        if level not in allowed_log_levels(ctx.protocol_version, meta if isinstance(meta, Mapping) else None):
            return
        connection = _connection(ctx)
        least = connection.state.get(_LOG_LEVEL) if connection is not None else None
        if least in context.LEVELS and context.LEVELS.index(level) < context.LEVELS.index(least):
            return
        # A forwarded call's messages name it, so the forwarding replica relays each to its caller.
        relayed = echo(meta) if isinstance(meta, Mapping) else None
        notification = LoggingMessageNotification(
            params=LoggingMessageNotificationParams(level=level, data=data, logger=logger, _meta=relayed)
        )
        await ctx.session.send_notification(notification, related_request_id=ctx.request_id)

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._ctx.session.report_progress(progress, total, message)


def _hop(ctx: ServerRequestContext[Any]) -> Hop:
    """How a request reached this replica: forwarded or not, and with which token."""
    meta = ctx.params.get("_meta") if ctx.params else None
    marks = meta if isinstance(meta, Mapping) else {}
    token = None
    request = getattr(ctx, "request", None)
    if request is not None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return Hop(_text(marks.get(FORWARDED)), token, _text(marks.get(PROOF)), _text(marks.get(SESSION)))


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _connection(ctx: ServerRequestContext[Any, Any]) -> Connection | None:
    """The connection a request came on, which lives as long as its client's session.

    `ctx.session` is a per-request proxy, and the SDK offers no public accessor for what is
    behind it.
    """
    connection = getattr(ctx.session, "_connection", None)
    return connection if isinstance(connection, Connection) else None


def _forwarded(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """The replica that forwarded this call here, if one did (`cluster.FORWARDED`); `_hop` reads
    the rest of the marks, which only replicas need."""
    meta = ctx.params.get("_meta") if ctx.params else None
    return _text(meta.get(FORWARDED)) if isinstance(meta, Mapping) else None


def _principal(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """Who a parked call's `request_state` is bound to: the verified token's client and subject,
    else the MCP session; None for an anonymous sessionless caller."""
    request = ctx.request
    user = getattr(request, "scope", {}).get("user") if request is not None else None
    token = getattr(user, "access_token", None)
    if token is not None:
        return compact_json(principal_components(token))
    connection = _connection(ctx)
    return None if connection is None else connection.session_id


def _wants_progress(ctx: ServerRequestContext[Any]) -> bool:
    meta = ctx.params.get("_meta") if ctx.params else None
    return isinstance(meta, Mapping) and meta.get("progressToken") is not None


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def _version() -> str:
    try:
        return version("statefulmcp")
    except PackageNotFoundError:
        return "0"
