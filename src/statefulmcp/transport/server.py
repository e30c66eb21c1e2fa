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
import time
import weakref
from collections.abc import Mapping
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server._otel import OpenTelemetryMiddleware
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult
from mcp.server.models import InitializationOptions
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    Tool,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from statefulmcp.components import ComponentError, LoadOptions, tool_result_text
from statefulmcp.host import Host

log = logging.getLogger("statefulmcp.transport")

HEARTBEAT_SECONDS = 2.0
"""How often a call whose client sent a progress token hears that it is still running."""

_ADMIN_LIST = Tool(
    name="list_components",
    description="List the loaded components: name, source, stateful, key, tools and live instance count.",
    input_schema={"type": "object", "properties": {}},
)
_ADMIN_LOAD = Tool(
    name="load_component",
    description=(
        "Load a component file (.py or .wasm) from the server's --allow-load directory. Loading a name "
        "that is already loaded replaces it; its instances start fresh."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "file path, relative to the allowed directory"},
            "name": {
                "type": ["string", "null"],
                "description": "component name (defaults to the declared one)",
            },
            "stateful": {"type": ["boolean", "null"]},
            "key": {"type": ["string", "null"], "description": "argument whose value selects the instance"},
            "handles": {"type": ["boolean", "null"]},
            "durability": {"type": ["string", "null"], "enum": ["turn", "memory", None]},
        },
        "required": ["path"],
    },
)
_ADMIN_UNLOAD = Tool(
    name="unload_component",
    description="Unload a component: its tools go away and its in-memory instances are dropped.",
    input_schema={
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "purge": {"type": "boolean", "default": False, "description": "also delete its durable state"},
        },
        "required": ["name"],
    },
)


class _Server(Server[Any]):
    """The SDK server, advertising `tools.listChanged` to handshake-era clients too."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(tools_changed=True),
            experimental_capabilities,
            extensions,
        )


class McpFrontend:
    """Serves a `Host` over MCP: tool listing and calls, admin tools, and change notifications."""

    def __init__(self, host: Host, *, allow_load: Path | None = None) -> None:
        self.host = host
        self.allow_load = allow_load.resolve() if allow_load is not None else None
        self.bus = InMemorySubscriptionBus()
        # Handshake-era connections that may hear `notifications/tools/list_changed`; weak so a
        # closed connection goes away by itself.
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._listing: ListToolsResult | None = None
        self._schemas: dict[str, dict[str, Any]] = {}
        self.server = _Server(
            "statefulmcp",
            version=_version(),
            get_tool_input_schema=self._input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_subscriptions_listen=ListenHandler(self.bus),
        )
        self.server.middleware[:] = [
            m for m in self.server.middleware if not isinstance(m, OpenTelemetryMiddleware)
        ] + [self._track_sessions]
        host.on_tools_changed(self._tools_changed)

    # -- listing ----------------------------------------------------------------------------

    def _admin_tools(self) -> list[Tool]:
        return [_ADMIN_LIST, _ADMIN_LOAD, _ADMIN_UNLOAD] if self.allow_load is not None else [_ADMIN_LIST]

    def _build_listing(self) -> ListToolsResult:
        tools = self._admin_tools()
        for name, spec in self.host.tools().items():
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
            connection = getattr(ctx.session, "_connection", None)
            if isinstance(connection, Connection):
                self._connections.add(connection)
        return await call_next(ctx)

    async def _tools_changed(self) -> None:
        self._listing = None
        await self.bus.publish(ToolsListChanged())
        for connection in list(self._connections):
            try:
                await connection.send_tool_list_changed()
            except Exception as exc:  # a client that went away must not stop the others
                log.debug("could not notify a session of the tool change: %s", exc)
                self._connections.discard(connection)

    # -- calls ------------------------------------------------------------------------------

    async def _call_tool(
        self, ctx: ServerRequestContext[Any], params: CallToolRequestParams
    ) -> CallToolResult:
        name = params.name
        arguments = params.arguments or {}
        if self.host.route(name) is not None:
            if _wants_progress(ctx):
                return await self._call_with_heartbeat(ctx, name, arguments)
            return await self.host.call_result(name, arguments)
        if name == "list_components":
            return self._list_components()
        if self.allow_load is not None and name == "load_component":
            return await self._load_component(arguments)
        if self.allow_load is not None and name == "unload_component":
            return await self._unload_component(arguments)
        raise MCPError(
            INVALID_PARAMS, f"unknown tool {name!r}; call tools/list to see what this server offers"
        )

    async def _call_with_heartbeat(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]
    ) -> CallToolResult:
        """Run a call, sending a progress notification every few seconds until it ends.

        A long-poll may wait minutes in silence; clients and proxies time out silent requests,
        so a caller that asked for progress (by sending a token) hears from us meanwhile.
        """
        call = asyncio.ensure_future(self.host.call_result(name, arguments))
        started = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=HEARTBEAT_SECONDS)
                if done:
                    return call.result()
                elapsed = time.monotonic() - started
                try:
                    await ctx.session.report_progress(
                        elapsed, None, f"{name}: still running after {elapsed:.0f} s"
                    )
                except Exception as exc:  # progress is best effort; the call goes on
                    log.debug("progress notification failed: %s", exc)
        finally:
            if not call.done():
                call.cancel()

    def _list_components(self) -> CallToolResult:
        components = [asdict(info) for info in self.host.list()]
        result = tool_result_text(_json(components))
        result.structured_content = {"components": components}
        return result

    async def _load_component(self, arguments: dict[str, Any]) -> CallToolResult:
        assert self.allow_load is not None
        path = arguments.get("path")
        if not isinstance(path, str) or not path:
            return tool_result_text(
                "load_component needs `path`, a file path inside the allowed directory", error=True
            )
        resolved = (self.allow_load / path).resolve()
        if not resolved.is_relative_to(self.allow_load):
            return tool_result_text(
                f"refused: {path!r} resolves to {resolved}, outside the allowed directory {self.allow_load}",
                error=True,
            )
        try:
            options = LoadOptions(
                name=arguments.get("name"),
                stateful=arguments.get("stateful"),
                key=arguments.get("key"),
                handles=arguments.get("handles"),
                durability=arguments.get("durability"),
            )
            names = await self.host.load(resolved, options)
        except ComponentError as exc:
            return tool_result_text(f"load failed: {exc}", error=True)
        except Exception as exc:
            log.exception("load_component %s failed", resolved)
            return tool_result_text(f"load failed: {type(exc).__name__}: {exc}", error=True)
        tools = [t for info in self.host.list() if info.name in names for t in info.tools]
        result = tool_result_text(f"loaded {', '.join(names)}: {', '.join(tools)}")
        result.structured_content = {"components": names, "tools": tools}
        return result

    async def _unload_component(self, arguments: dict[str, Any]) -> CallToolResult:
        name = arguments.get("name")
        if not isinstance(name, str):
            return tool_result_text("unload_component needs `name`, the component to unload", error=True)
        try:
            await self.host.unload(name, purge=bool(arguments.get("purge", False)))
        except ComponentError as exc:
            return tool_result_text(f"unload failed: {exc}", error=True)
        result = tool_result_text(f"unloaded {name}")
        result.structured_content = {"unloaded": name}
        return result


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
