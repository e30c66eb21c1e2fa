"""The host: loads and unloads components, and routes each call to its instance.

The routing table maps a tool name to its component and tool spec. It is replaced whole on every
load or unload (never mutated in place), so the transport thread can read it without a lock
while the engine changes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp_types import CallToolResult

from statefulmcp.components import (
    ComponentError,
    ComponentSpec,
    InstanceLost,
    LoadOptions,
    ToolInputError,
    ToolResultError,
    ToolSpec,
    import_file,
    specs_from_module,
    specs_from_object,
    tool_result_text,
)
from statefulmcp.engine import Deadlines, Engine
from statefulmcp.instances import CallError, Component
from statefulmcp.remote import Remote, RemoteCallError, RemotePool
from statefulmcp.state import Store, StoreError, Sync, store_path
from statefulmcp.state.sqlite import SqliteStore
from statefulmcp.state.view import StateValueError

log = logging.getLogger("statefulmcp.host")

# Tools the transport serves itself; no component may take these names.
RESERVED_TOOL_NAMES = frozenset({"list_components", "load_component", "unload_component"})

_SUFFIXES = (".py", ".wasm")


class ToolCallError(Exception):
    """A tool call failed; the message says why and is what an MCP client sees as the error."""


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """What `Host.list()` and the `list_components` tool report about a loaded component."""

    name: str
    source: str
    stateful: bool
    key: str | None
    handles: bool
    durability: str
    tools: list[str]
    instances: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a tool name leads: its component, its spec, and the host-made body if it has one."""

    component: Component
    tool: ToolSpec
    builtin: Callable[[Component, dict[str, Any]], Coroutine[Any, Any, Any]] | None = None


def _handle_tools(
    spec: ComponentSpec,
) -> list[tuple[ToolSpec, Callable[[Component, dict[str, Any]], Coroutine[Any, Any, Any]]]]:
    """The `<name>_open` / `<name>_close` tools of a component with handles."""
    key = spec.key or "session"

    async def open_(component: Component, arguments: dict[str, Any]) -> str:
        return await component.open_handle()

    async def close(component: Component, arguments: dict[str, Any]) -> bool:
        if not await component.close_handle(arguments[key]):
            raise CallError(f"unknown or closed handle {arguments[key]!r} for component {spec.name!r}")
        return True

    def validate_close(arguments: dict[str, Any]) -> dict[str, Any]:
        value = arguments.get(key)
        if not isinstance(value, str):
            raise ToolInputError(f"{key}: a handle string is required")
        return {key: value}

    def as_result(value: Any) -> CallToolResult:
        result = tool_result_text(str(value).lower() if isinstance(value, bool) else str(value))
        result.structured_content = {"result": value}
        return result

    def unused(instance: Any, arguments: dict[str, Any]) -> Any:
        raise AssertionError("handle tools run on the component, not on an instance")

    open_spec = ToolSpec(
        name="open",
        description=f"Open a new {spec.name} instance and return its handle; pass it as `{key}` to the other tools.",
        input_schema={"type": "object", "properties": {}},
        output_schema={
            "type": "object",
            "properties": {"result": {"type": "string"}},
            "required": ["result"],
        },
        validate=lambda arguments: {},
        call=unused,
        is_async=True,
        to_result=as_result,
    )
    close_spec = ToolSpec(
        name="close",
        description=f"Close a {spec.name} handle and drop its instance.",
        input_schema={"type": "object", "properties": {key: {"type": "string"}}, "required": [key]},
        output_schema={
            "type": "object",
            "properties": {"result": {"type": "boolean"}},
            "required": ["result"],
        },
        validate=validate_close,
        call=unused,
        is_async=True,
        to_result=as_result,
    )
    return [(open_spec, open_), (close_spec, close)]


class Host:
    """Loads components, owns the engine and the store, and runs calls.

    Use as `async with Host(state="sqlite:///state.db") as host:`. The same object backs the MCP
    server and in-process embedding: `await host.call(name, args)` returns what the tool
    returned, and raises `ToolCallError` when the call fails.

    `state` is where durable state goes (a `sqlite:///` URL, a path, or a `Store`); without one,
    every component keeps its state in memory only. `sync="process"` trades the OS-crash guarantee
    for speed (see docs/guarantees.md). `max_call_seconds` caps every call.
    """

    def __init__(
        self,
        *,
        state: str | Path | Store | None = None,
        sync: Sync = "os",
        max_call_seconds: float | None = 300.0,
    ) -> None:
        self.engine = Engine()
        self.deadlines = Deadlines()
        self._state = state
        self._sync: Sync = sync
        self.store: Store | None = None
        self.max_call_seconds = max_call_seconds
        self.remotes = RemotePool()
        self._components: dict[str, Component] = {}
        self._routes: dict[str, Route] = {}
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self._started = False
        self.draining = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._changing = asyncio.Lock()  # one load or unload at a time

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store (raising `StoreError` if it cannot be used) and start the engine."""
        if self._started:
            return
        if isinstance(self._state, str | Path):
            self.store = SqliteStore(store_path(self._state), sync=self._sync)
        elif self._state is not None:
            self.store = self._state
        self.engine.start()
        self._started = True

    async def drain(self, timeout: float) -> bool:
        """Refuse new calls and wait up to `timeout` s for in-flight ones; False if some remain."""
        self.draining = True
        if self._inflight == 0:
            return True
        self._idle.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("%d calls still running after the %.1f s drain timeout", self._inflight, timeout)
            return False
        return True

    async def aclose(self) -> None:
        """Deactivate every instance (committing what `on_deactivate` writes), close the store, stop."""
        if not self._started:
            return
        self.draining = True
        for name in list(self._components):
            await self.unload(name, notify=False)
        await self.engine.run(self.remotes.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        await asyncio.to_thread(self.engine.stop)
        self._started = False

    async def __aenter__(self) -> Host:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def on_tools_changed(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine function to run after every load or unload (the transport's hook)."""
        self._listeners.append(listener)

    async def _notify(self) -> None:
        for listener in self._listeners:
            try:
                await listener()
            except Exception:
                log.exception("tools-changed listener failed")

    # -- load / unload / list ---------------------------------------------------------------

    async def load(self, target: str | Path | object, options: LoadOptions | None = None) -> list[str]:
        """Load a file, a directory of files, or an in-process object; return the component names.

        A component whose name is already loaded is replaced: its instances are deactivated
        (their `on_deactivate` writes committed) before the new one serves, so the new instances
        start fresh from durable state. A tool name already served by another component is
        refused, and nothing changes.
        """
        specs = await asyncio.to_thread(self._specs_of, target, options)
        async with self._changing:
            components, routes, replaced = self._plan(specs)
            for old in replaced:
                old.closed = True
                await self.engine.run(old.close)
            self._components, self._routes = components, routes
        for spec in specs:
            log.info("loaded component %s from %s (%d tools)", spec.name, spec.source, len(spec.tools))
        await self._notify()
        return [spec.name for spec in specs]

    def _specs_of(self, target: str | Path | object, options: LoadOptions | None) -> list[ComponentSpec]:
        if not isinstance(target, str | Path):
            return specs_from_object(target, options)
        # absolute, not resolved: a .wasm policy file is looked up beside the path as given
        path = Path(target).absolute()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES and not p.name.startswith("_"))
            if not files:
                raise ComponentError(f"{path}: no .py or .wasm files in this directory")
            if options is not None and options.name:
                raise ComponentError(f"{path}: a load-time name fits one component, not a directory")
            return [spec for file in files for spec in self._specs_of(file, options)]
        if not path.exists():
            raise ComponentError(f"{path}: no such file or directory")
        if path.suffix == ".wasm":
            from statefulmcp.wasm import load_wasm

            return [load_wasm(path, options)]
        if path.suffix != ".py":
            raise ComponentError(f"{path}: expected a .py or .wasm file or a directory")
        return specs_from_module(import_file(path), str(path), options)

    def _plan(
        self, specs: list[ComponentSpec]
    ) -> tuple[dict[str, Component], dict[str, Route], list[Component]]:
        """The component and routing tables after loading `specs`, and the components they replace."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ComponentError(f"two components in one load share a name: {sorted(names)}")
        replaced = [self._components[name] for name in names if name in self._components]
        routes = {n: r for n, r in self._routes.items() if r.component not in replaced}
        components = {n: c for n, c in self._components.items() if c not in replaced}
        for spec in specs:
            self._check_uses(spec)
            if spec.durability == "turn" and self.store is None and spec.stateful:
                log.warning(
                    "no state store configured: component %s keeps its state in memory only", spec.name
                )
            component = Component(
                spec,
                store=self.store,
                max_call_seconds=self.max_call_seconds,
                deadlines=self.deadlines,
                bind=self._binder(spec),
            )
            components[spec.name] = component
            entries: list[tuple[ToolSpec, Any]] = [(t, None) for t in spec.tools]
            if spec.handles:
                entries += _handle_tools(spec)
            for tool, builtin in entries:
                full = f"{spec.name}_{tool.name}"
                if full in RESERVED_TOOL_NAMES:
                    raise ComponentError(
                        f"tool name {full!r} is reserved by the host; rename the component or tool"
                    )
                if full in routes:
                    owner = routes[full].component.spec
                    raise ComponentError(
                        f"tool {full!r} of component {spec.name!r} ({spec.source}) is already served by "
                        f"component {owner.name!r} ({owner.source}); nothing was loaded. Rename one of them"
                    )
                routes[full] = Route(component, tool, builtin)
        return components, routes, replaced

    async def unload(self, name: str, *, purge: bool = False, notify: bool = True) -> None:
        """Remove a component and its tools; its instances are deactivated and dropped.

        Durable state stays (a reload resumes it) unless `purge` is true.
        """
        async with self._changing:
            component = self._components.get(name)
            if component is None:
                raise ComponentError(f"no component named {name!r} is loaded")
            self._routes = {n: r for n, r in self._routes.items() if r.component is not component}
            self._components = {n: c for n, c in self._components.items() if c is not component}
            component.closed = True
            await self.engine.run(component.close)
            if purge and self.store is not None:
                await self.engine.run(lambda: self._purge(name))
        log.info("unloaded component %s%s", name, " and purged its state" if purge else "")
        if notify:
            await self._notify()

    async def _purge(self, name: str) -> None:
        assert self.store is not None
        await self.store.purge(name)

    async def activate_eager(self) -> int:
        """Activate every instance with durable state of each `activate="eager"` component.

        Returns how many were activated. `/ready` waits for this, so background work resumes
        before the server says it can serve.
        """
        store = self.store
        if store is None:
            return 0
        count = 0
        for component in list(self._components.values()):
            if component.spec.activate != "eager" or component.store is None:
                continue

            async def run(component: Component = component) -> int:
                assert store is not None
                keys = await store.keys(component.spec.name)
                for key in keys:
                    await component.activate(None if key == "" and component.spec.key is None else key)
                return len(keys)

            count += await self.engine.run(run)
        return count

    # -- calls to other tools ---------------------------------------------------------------

    def _check_uses(self, spec: ComponentSpec) -> None:
        for alias, target in spec.uses.items():
            if not alias.isidentifier() or alias.startswith("_"):
                raise ComponentError(
                    f"component {spec.name!r}: uses alias {alias!r} must be a public identifier"
                )
            if not isinstance(target, str | Remote):
                raise ComponentError(
                    f"component {spec.name!r}: uses[{alias!r}] must be a tool name or Remote(url, tool), "
                    f"not {target!r}"
                )

    def _binder(self, spec: ComponentSpec) -> Callable[[Any], None] | None:
        """Give each new object of `spec` an awaitable per `uses` entry (`self.prices(...)`)."""
        if not spec.uses:
            return None
        calls: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {}
        for alias, target in spec.uses.items():
            if isinstance(target, Remote):

                async def remote(_target: Remote = target, **arguments: Any) -> Any:
                    return await self.remotes.call(_target, arguments)

                calls[alias] = remote
            else:

                async def local(_name: str = target, **arguments: Any) -> Any:
                    return await self.call(_name, arguments)

                calls[alias] = local

        def bind(obj: Any) -> None:
            for alias, call in calls.items():
                setattr(obj, alias, call)

        return bind

    def list(self) -> list[ComponentInfo]:
        """Every loaded component with its tools and live instance count."""
        out = []
        for component in self._components.values():
            spec = component.spec
            out.append(
                ComponentInfo(
                    name=spec.name,
                    source=spec.source,
                    stateful=spec.stateful,
                    key=spec.key,
                    handles=spec.handles,
                    durability=spec.durability,
                    tools=[n for n, r in self._routes.items() if r.component is component],
                    instances=component.live_count,
                    details={**spec.details, **component.details()},
                )
            )
        return out

    def tools(self) -> dict[str, ToolSpec]:
        """Tool name -> spec, for listing."""
        return {name: route.tool for name, route in self._routes.items()}

    def route(self, name: str) -> Route | None:
        return self._routes.get(name)

    # -- calls ------------------------------------------------------------------------------

    def _resolve(self, name: str, arguments: dict[str, Any] | None) -> tuple[Route, dict[str, Any]]:
        route = self._routes.get(name)
        if route is None:
            raise ToolCallError(f"unknown tool {name!r}; list the tools to see what this server offers")
        try:
            return route, route.tool.validate(arguments or {})
        except ToolInputError as exc:
            raise ToolCallError(f"invalid arguments for tool {name!r}: {exc}") from None

    async def _run(self, route: Route, arguments: dict[str, Any]) -> Any:
        # A call made from inside a turn (a component using another tool) is part of a call
        # already counted, and must be able to finish while draining.
        outer = not self.engine.on_engine()
        if outer and self.draining:
            raise ToolCallError("the server is shutting down and takes no new calls; retry after it restarts")
        component, tool, builtin = route.component, route.tool, route.builtin
        if outer:
            self._inflight += 1
        try:
            if builtin is not None:
                return await self.engine.run(lambda: builtin(component, arguments))
            return await self.engine.run(lambda: component.call(tool, arguments))
        except (
            CallError,
            ComponentError,
            InstanceLost,
            RemoteCallError,
            StateValueError,
            StoreError,
            ToolCallError,
        ) as exc:
            # The host's own errors already say what happened and what to do.
            raise ToolCallError(str(exc)) from None
        except Exception as exc:
            log.warning("tool %s_%s raised", component.spec.name, tool.name, exc_info=exc)
            raise ToolCallError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        finally:
            if outer:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.set()

    async def call(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        """Call a tool in-process and return what it returned; raises `ToolCallError` on failure."""
        route, validated = self._resolve(name, arguments)
        return await self._run(route, validated)

    async def call_result(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        """Call a tool and return the MCP result; failures become `isError` results, never raise."""
        try:
            route, validated = self._resolve(name, arguments)
            value = await self._run(route, validated)
            return route.tool.to_result(value)
        except (ToolCallError, ToolResultError) as exc:
            return tool_result_text(str(exc), error=True)
