"""The host: loads and unloads components, and routes each call to its entry in the tool table.

The host has one explicit life cycle, `UNOPENED -> OPEN -> DRAINING -> CLOSED`: calls before
`start()` or after `aclose()` fail at once with an error that says what to do, and a closed
host cannot be reopened. It owns everything it starts: the engine (thread, clock, deadlines,
watchdog, worker threads), the store, remote connections and every live component.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from mcp import ClientSession
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    GetPromptRequest,
    GetPromptRequestParams,
    GetPromptResult,
    ReadResourceRequest,
    ReadResourceRequestParams,
    ReadResourceResult,
    RequestParamsMeta,
    Resource,
    ResourceTemplate,
    Result,
)

from statefulmcp import context, instances, state_resources
from statefulmcp._confined import SUFFIXES, ComponentFile
from statefulmcp._errors import (
    ClientCapabilityError,
    ComponentError,
    HostStateError,
    StatefulMCPError,
    ToolCallError,
    ToolInputError,
    ToolResultError,
)
from statefulmcp._importing import import_file
from statefulmcp._options import LoadOptions
from statefulmcp._tools import ComponentTool, EngineTool, Entry, Finish, HostTool, ToolTable
from statefulmcp.cluster import (
    DEFAULT_LEASE_SECONDS,
    NOT_OWNER,
    SESSION,
    Cluster,
    Elsewhere,
    Hop,
    NotOwner,
    Send,
)
from statefulmcp.components import (
    ComponentSpec,
    Permissions,
    PromptSpec,
    ResourceSpec,
    ToolSpec,
    refuse_lazy,
    specs_from_module,
    specs_from_object,
    tool_result_text,
)
from statefulmcp.engine import Engine
from statefulmcp.handles import handle_tools
from statefulmcp.live import LiveComponent, Residency
from statefulmcp.per_session import SESSION_ARGUMENT, is_session_key, session_key, with_session_argument
from statefulmcp.remote import Remote, RemotePool, result_value
from statefulmcp.state import Store, Sync, is_postgres, store_path
from statefulmcp.state.sqlite import SqliteStore
from statefulmcp.updates import STATE_SCHEME, Listener, Updates

log = logging.getLogger("statefulmcp.host")

# Tools the host serves itself; no component may take these names.
RESERVED_TOOL_NAMES = frozenset({"list_components", "load_component", "unload_component"})


Target = str | Path | object

DEFAULT_IDLE_SECONDS = 600.0
"""How long an instance of a durable component may go without a call before it is passivated."""

DEFAULT_MAX_INSTANCES = 100_000
"""Live stateful instances kept at most, all components together."""

DEFAULT_MAX_WAITERS = 10_000
"""Calls parked in `wait_until` on one instance, at most."""

_MAX_SWEEP = 5.0
"""The longest pause between two idle sweeps (seconds)."""

_SWEEP_BATCH = 500
"""Idle instances one sweep starts passivating before it waits for them (the loop turns between)."""

_SWEEP_BATCH_SECONDS = 1.0
"""How long a sweep waits for a batch at most (a call that slipped in may hold an instance)."""

_SHOWN_KEYS = 100
"""How many owned keys per component the replica view lists (the count is in `instances`)."""

_COMPLETED_KEYS = 1000
"""Existing keys a completion looks at, at most (the answer carries 100 and says how many)."""

_ANSWERS = frozenset({INVALID_PARAMS, INTERNAL_ERROR})
"""The JSON-RPC errors an owner answers a forwarded prompt get or resource read with (its own
answer, passed on to the caller as it is), as `McpFrontend` does."""

R = TypeVar("R", bound=Result)


class _Life(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    DRAINING = "draining"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class ComponentInfo:
    """What `Host.list()` and the `list_components` tool report about a loaded component."""

    name: str
    source: str
    stateful: bool
    key: str | None
    handles: bool
    durability: str
    per_session: bool
    tools: list[str]
    instances: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LoadFailure:
    """A file that `Host.load_what_loads` could not load, and why; listed until it loads."""

    source: str
    error: str


_IMMUTABLE = (int, float, str, bool, bytes, type(None))


def _private_copy(name: str, value: Any) -> Any:
    """A copy of a tool's value that the instance cannot change any more (immutables as they are).

    A value that cannot be copied gets the same clear error a client would get, not the
    `TypeError` or `RecursionError` of `deepcopy`.
    """
    if type(value) in _IMMUTABLE:
        return value
    refuse_lazy(name, value)
    try:
        return copy.deepcopy(value)
    except RecursionError:
        raise ToolResultError(f"tool {name!r} returned a value nested too deeply to copy") from None
    except TypeError as exc:
        raise ToolResultError(
            f"tool {name!r} returned a {type(value).__name__} the host cannot copy for the caller ({exc}); "
            "return data: dict, list, str, int, float, bool, None or a pydantic model"
        ) from None


class Host:
    """Loads components, owns the engine and the store, and runs calls.

    Use as `async with Host(state="sqlite:///state.db") as host:`. The same object backs the MCP
    server and in-process embedding: `await host.call(name, args)` returns (a private copy of)
    what the tool returned, and raises `ToolCallError` when the call fails.

    `state` is where durable state goes (a `sqlite:///` URL, a path, or a `Store`); without one,
    every component keeps its state in memory only. `sync="process"` trades the OS-crash guarantee
    for speed (see docs/guarantees.md). `max_call_seconds` caps every call; `hook_seconds` caps
    each `on_deactivate` (and the wait for a turn to end) at unload and shutdown.

    `idle_seconds` passivates an instance of a durable component after that long without a call
    (`on_deactivate`, commit, memory freed; the next call activates it again from the store);
    `max_instances` bounds the live stateful instances of all components together, passivating
    the least recently used idle one past it; `max_waiters` bounds the calls parked in
    `wait_until` on one instance. None turns any of them off.
    """

    def __init__(
        self,
        *,
        state: str | Path | Store | None = None,
        sync: Sync = "os",
        max_call_seconds: float | None = 300.0,
        hook_seconds: float = 10.0,
        workers: int = 64,
        stall_seconds: float = 2.0,
        advertise: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        audit_commits: bool = False,
        idle_seconds: float | None = DEFAULT_IDLE_SECONDS,
        max_instances: int | None = DEFAULT_MAX_INSTANCES,
        max_waiters: int | None = DEFAULT_MAX_WAITERS,
    ) -> None:
        self.engine = Engine(workers=workers, stall_seconds=stall_seconds)
        self._state = state
        self._sync: Sync = sync
        self.store: Store | None = None
        self.cluster: Cluster | None = None
        """Set when the state is PostgreSQL: this process is one replica of possibly several."""
        self._advertise = advertise
        self._lease = lease_seconds
        self._loops: dict[str, asyncio.Task[None]] = {}
        """The host's own loops on the engine (the idle sweep, eager adoption), by name."""
        self.max_waiters = max_waiters
        self.residency = Residency(
            lambda: self._components.values(), max_instances=max_instances, idle_seconds=idle_seconds
        )
        self._audit = audit_commits
        self.max_call_seconds = max_call_seconds
        self.hook_seconds = hook_seconds
        self.remotes = RemotePool()
        self._components: dict[str, LiveComponent] = {}
        self._failed: dict[str, str] = {}  # source -> why it did not load (load_what_loads)
        self._table = ToolTable()
        self._prompts: dict[str, tuple[LiveComponent, PromptSpec]] = {}
        self._resources: dict[str, tuple[LiveComponent, ResourceSpec]] = {}  # by URI (or template)
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self.updates = Updates()
        self._life = _Life.UNOPENED
        self._calls: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        self._drain_timeout = 0.0
        self._idle = asyncio.Event()
        self._changing = asyncio.Lock()  # one load or unload at a time

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store (raising `StoreError` if it cannot be used) and start the engine."""
        if self._life is _Life.OPEN:
            return
        if self._life is not _Life.UNOPENED:
            raise HostStateError("this host was closed and cannot be reopened; create a new Host")
        if is_postgres(self._state):
            self._start_replica(str(self._state))
        elif isinstance(self._state, str | Path):
            self.store = SqliteStore(store_path(self._state), sync=self._sync)
            engine = self.engine
            self.store.alone = lambda: engine.calls <= 1  # the committing call itself
        elif self._state is not None:
            self.store = self._state
        self.engine.start()
        self._life = _Life.OPEN

    def _start_replica(self, url: str) -> None:
        """Open the shared store and join the replicas (see `statefulmcp.cluster`)."""
        from statefulmcp.state.postgres import PostgresStore

        store = PostgresStore(url, audit=self._audit)
        cluster = Cluster(
            url, advertise=self._advertise, lease=self._lease, call_seconds=self.max_call_seconds
        )
        store.replica = cluster.replica
        try:
            cluster.start()
        except BaseException:
            store.close()
            cluster.ownership.close()
            raise
        engine = self.engine
        cluster.on_new_life.append(lambda: engine.loop.call_soon_threadsafe(self._drop_everything))
        self.store, self.cluster = store, cluster

    def _drop_everything(self) -> None:
        """This replica's lease expired: every instance may have moved; none may run again here."""
        for live in self._components.values():
            for instance in list(live.instances.values()):
                live.drop(instance, "dropped: this replica's lease expired, so the instance may have moved")

    def _require_open(self, *, draining_ok: bool = False) -> None:
        life = self._life
        if life is _Life.OPEN or (draining_ok and life is _Life.DRAINING):
            return
        if life is _Life.UNOPENED:
            raise HostStateError(
                "the host is not started: use `async with Host(...) as host:` or call `host.start()` first"
            )
        if life is _Life.DRAINING:
            raise ToolCallError("the server is shutting down and takes no new calls; retry after it restarts")
        raise HostStateError("this host is closed; a closed host cannot be reopened, create a new Host")

    @property
    def draining(self) -> bool:
        return self._life in (_Life.DRAINING, _Life.CLOSED)

    def health(self) -> str | None:
        """None when the host can serve; otherwise why not (for `/ready` and `list_components`)."""
        if self._life is not _Life.OPEN:
            return f"the host is {self._life.value}"
        stalled = self.engine.watchdog.stalled()
        if stalled is not None:
            return stalled
        store_health = getattr(self.store, "health", None)
        return store_health() if callable(store_health) else None

    async def drain(self, timeout: float) -> bool:
        """Refuse new calls and wait up to `timeout` s for in-flight ones; False if some remained.

        Calls still running at the timeout are cancelled, and each answers with a clear "shutting
        down" error instead of being cut off without a reply.
        """
        if self._life is _Life.OPEN:
            self._life = _Life.DRAINING
        if not self._calls:
            return True
        self._idle.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            pass
        log.warning(
            "%d calls still running after the %.1f s drain timeout; cancelling them",
            len(self._calls),
            timeout,
        )
        self._drain_timeout = timeout
        self._cut = set(self._calls)
        for task in self._cut:
            task.cancel()
        try:
            async with asyncio.timeout(2.0):
                await self._idle.wait()
        except TimeoutError:
            log.error("%d cancelled calls did not answer; they are abandoned", len(self._calls))
        return False

    async def aclose(self) -> None:
        """Deactivate every instance (committing what `on_deactivate` writes), close the store, stop.

        Everything the host started is stopped and awaited: no thread or task of it remains.
        """
        if self._life in (_Life.UNOPENED, _Life.CLOSED):
            self._life = _Life.CLOSED
            return
        self._life = _Life.DRAINING
        await self.engine.run(self._stop_loops)
        await self._unload_all()
        await self.engine.run(self.remotes.close)
        cluster = self.cluster
        if cluster is not None:
            await cluster.release_all()  # after the last commit: the others claim without waiting
            await cluster.close_pool()
            await self.engine.run(cluster.close_pool)
        self._life = _Life.CLOSED
        await asyncio.to_thread(self.engine.stop)
        if cluster is not None:
            await asyncio.to_thread(cluster.close)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> Host:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def on_tools_changed(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine function to run after every load or unload (the transport's hook)."""
        self._listeners.append(listener)

    def on_resources_updated(self, listener: Listener) -> None:
        """Register `listener(uris)`, called on the running loop after each commit that updated
        resources (the transport's hook; see `statefulmcp.updates`)."""
        self.updates.listen(listener)

    async def _notify(self) -> None:
        for listener in self._listeners:
            try:
                await listener()
            except Exception:
                log.exception("tools-changed listener failed")

    # -- load / unload / list ---------------------------------------------------------------

    async def load(self, target: Target, options: LoadOptions | None = None) -> list[str]:
        """Load a file, a directory of files, or an in-process object; return the component names.

        A component whose name is already loaded is replaced: new calls wait for the new one,
        parked waiters of the old one fail at once, and its instances are deactivated (their
        `on_deactivate` writes committed) before the new one serves, so the new instances start
        fresh from durable state. A tool name already served by another component is refused,
        and nothing changes.
        """
        return await self.load_all([target], options)

    async def load_all(self, targets: Sequence[Target], options: LoadOptions | None = None) -> list[str]:
        """Load several targets as one change: components in one batch may use each other's tools."""
        self._require_open()
        specs = await asyncio.to_thread(lambda: [s for t in targets for s in self._specs_of(t, options)])
        await self._install(specs)
        return [spec.name for spec in specs]

    async def load_what_loads(self, paths: Sequence[str | Path]) -> list[LoadFailure]:
        """Load every file of `paths` (files, or directories of them) that loads; each one that
        does not is logged and kept in `failed()` until a later load of it succeeds.

        Each file is read and checked on its own, then the good ones are loaded together. When
        that is refused (a tool name two of them share, a `uses` naming a tool that did not
        load), they are loaded one by one, in rounds, so one that uses another's tools still
        loads once the other has; what is still refused when a round loads nothing has failed.
        """
        self._require_open()
        built = await asyncio.to_thread(self._specs_each, paths)
        good = [(source, specs) for source, specs in built if not isinstance(specs, str)]
        for source, specs in built:
            if isinstance(specs, str):
                self._failed[source] = specs
        try:
            await self._install([spec for _, file_specs in good for spec in file_specs])
        except ComponentError:
            await self._install_each(good)
        for failure in self.failed():
            log.error("not serving %s: %s", failure.source, failure.error)
        return self.failed()

    def _specs_each(self, paths: Sequence[str | Path]) -> list[tuple[str, list[ComponentSpec] | str]]:
        """Each file of `paths` with its specs, or with the reason it cannot be loaded."""
        files: list[Path] = []
        for target in paths:
            path = Path(target).absolute()
            if path.is_dir():
                found = sorted(
                    p for p in path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("_")
                )
                files += found or [path]  # an empty directory is refused below, naming it
            else:
                files.append(path)
        built: list[tuple[str, list[ComponentSpec] | str]] = []
        for file in files:
            try:
                built.append((str(file), self._specs_of(file, None)))
            except ComponentError as exc:
                built.append((str(file), str(exc)))
        return built

    async def _install_each(self, pending: list[tuple[str, list[ComponentSpec]]]) -> None:
        while pending:
            refused: list[tuple[str, list[ComponentSpec], str]] = []
            for source, specs in pending:
                try:
                    await self._install(specs)
                except ComponentError as exc:
                    refused.append((source, specs, str(exc)))
            if len(refused) == len(pending):
                for source, _, error in refused:
                    self._failed[source] = error
                return
            pending = [(source, specs) for source, specs, _ in refused]

    async def _install(self, specs: list[ComponentSpec]) -> None:
        """Serve `specs` as one change (all or nothing), replacing components of the same names."""
        async with self._changing:
            self._require_open()
            components, table, replaced = self._plan(specs)
            prompts, resources = _prompt_table(components), _resource_table(components)
            for old in replaced:
                old.closed = True
                await self.engine.run(old.close)
            self._components, self._table, self._prompts = components, table, prompts
            self._resources = resources
            for spec in specs:
                self._failed.pop(spec.source, None)
            if any(spec.stateful for spec in specs):
                await self.engine.run(lambda: self._start_loop("sweep", self._sweep))
        for spec in specs:
            log.info("loaded component %s from %s (%d tools)", spec.name, spec.source, len(spec.tools))
        await self._notify()

    def failed(self) -> list[LoadFailure]:
        """The files `load_what_loads` could not load, and why (each until it loads)."""
        return [LoadFailure(source, error) for source, error in self._failed.items()]

    def _specs_of(self, target: Target, options: LoadOptions | None) -> list[ComponentSpec]:
        if isinstance(target, ComponentFile):  # read from a checked descriptor: never by path again
            if target.path.suffix == ".wasm":
                from statefulmcp.wasm import load_wasm

                return [load_wasm(target.path, options, target)]
            return specs_from_module(import_file(target.path, target.data), str(target.path), options)
        if not isinstance(target, str | Path):
            return specs_from_object(target, options)
        if "\x00" in str(target):
            raise ComponentError(f"{str(target)!r}: a path cannot contain a NUL character")
        # absolute, not resolved: a .wasm policy file is looked up beside the path as given
        path = Path(target).absolute()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and not p.name.startswith("_"))
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
    ) -> tuple[dict[str, LiveComponent], ToolTable, list[LiveComponent]]:
        """The component map and tool table after loading `specs`, and the components they replace."""
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ComponentError(f"two components in one load share a name: {sorted(names)}")
        replaced = [self._components[name] for name in names if name in self._components]
        table = self._table.without({c.name for c in replaced})
        components = {n: c for n, c in self._components.items() if c not in replaced}
        for spec in specs:
            live = self._live(spec)
            components[spec.name] = live
            table = table.adding(self._entries(live), f"component {spec.name!r} ({spec.source})")
        for spec in specs:
            self._check_uses(spec, table)
        return components, table, replaced

    def _live(self, spec: ComponentSpec) -> LiveComponent:
        if spec.durability == "turn" and self.store is None and spec.stateful:
            log.warning("no state store configured: component %s keeps its state in memory only", spec.name)
        return LiveComponent(
            spec,
            engine=self.engine,
            store=self.store,
            max_call_seconds=self.max_call_seconds,
            hook_seconds=self.hook_seconds,
            sync_limit=max(1, self.engine.workers // 4),
            bind=self._binder(spec),
            cluster=self.cluster,
            residency=self.residency,
            max_waiters=self.max_waiters,
            updates=self.updates,
        )

    def _entries(self, live: LiveComponent) -> dict[str, Entry]:
        spec = live.spec
        tools = [with_session_argument(spec.name, t) for t in spec.tools] if spec.per_session else spec.tools
        entries: dict[str, Entry] = {
            f"{spec.name}_{t.name}": ComponentTool(t, live, self.engine) for t in tools
        }
        if live.handles is not None:
            handles = live.handles
            open_spec, close_spec = handle_tools(spec.name, spec.key or "session")
            key = spec.key or "session"

            async def open_(live: LiveComponent, arguments: dict[str, Any]) -> str:
                return await handles.open()

            async def close(live: LiveComponent, arguments: dict[str, Any]) -> bool:
                handle = arguments[key]
                if live.cluster is not None and handle not in live.instances:
                    # Closed where it lives: claimed here, or forwarded to its owner (`Elsewhere`).
                    await handles.check(handle)
                    await live.activate(handle)
                if not await handles.close(live, handle):
                    raise ToolCallError(
                        f"unknown or closed handle {arguments[key]!r} for component {spec.name!r}"
                    )
                return True

            entries[f"{spec.name}_open"] = EngineTool(open_spec, live, self.engine, open_)
            entries[f"{spec.name}_close"] = EngineTool(close_spec, live, self.engine, close)
        for name in entries:
            if name in RESERVED_TOOL_NAMES:
                raise ComponentError(
                    f"tool name {name!r} is reserved by the host; rename the component or tool"
                )
        return entries

    def add_host_tools(self, tools: Iterable[HostTool]) -> None:
        """Serve the host's own tools (the transport's admin tools) beside the components' tools."""
        self._table = self._table.adding({t.spec.name: t for t in tools}, "the host")

    async def unload(self, name: str, *, purge: bool = False) -> None:
        """Remove a component and its tools; its instances are deactivated and dropped.

        Durable state stays (a reload resumes it) unless `purge` is true.
        """
        self._require_open()
        await self._unload(name, purge=purge)
        await self._notify()

    async def _unload(self, name: str, *, purge: bool) -> None:
        async with self._changing:
            live = self._components.get(name)
            if live is None:
                raise ComponentError(f"no component named {name!r} is loaded")
            self._table = self._table.without({name})
            self._components = {n: c for n, c in self._components.items() if c is not live}
            self._prompts = {n: p for n, p in self._prompts.items() if p[0] is not live}
            self._resources = {u: r for u, r in self._resources.items() if r[0] is not live}
            live.closed = True
            await self.engine.run(live.close)
            store = self.store
            if purge and store is not None:
                await self.engine.run(lambda: store.purge(name))
        log.info("unloaded component %s%s", name, " and purged its state" if purge else "")

    def permissions(self, name: str) -> Permissions:
        """The run-time grants of a loaded component; an error if it has none (not WebAssembly)."""
        live = self._components.get(name)
        if live is None:
            raise ComponentError(f"no component named {name!r} is loaded")
        if live.spec.permissions is None:
            raise ComponentError(
                f"component {name!r} is not sandboxed: only WebAssembly components have grants to change"
            )
        return live.spec.permissions

    async def drop_instances(self, name: str, reason: str) -> list[str | None]:
        """Drop every live instance of a component, each after its current turn; their keys.

        Their in-memory state is lost (durable state stays): the next call of each key starts a
        fresh instance. Used when a component's grants are narrowed.
        """
        live = self._components.get(name)
        if live is None:
            raise ComponentError(f"no component named {name!r} is loaded")

        async def drop_all() -> list[str | None]:
            keys = list(live.instances)
            await asyncio.gather(*(live.passivate(key, reason=reason) for key in keys))
            return keys

        keys = await self.engine.run(drop_all)
        if keys:
            log.info(
                "%s: dropped %d live instances (%s); their in-memory state was lost", name, len(keys), reason
            )
        return keys

    async def _unload_all(self) -> None:
        """Unload every component at once: instances whose `on_deactivate` hangs are each bounded
        by `hook_seconds`, and side by side they cost that bound once, not once per component."""
        async with self._changing:
            lives = list(self._components.values())
            self._table = self._table.without(set(self._components))
            self._components = {}
            for live in lives:
                live.closed = True
            outcomes = await asyncio.gather(
                *(self.engine.run(live.close) for live in lives), return_exceptions=True
            )
        for live, result in zip(lives, outcomes, strict=True):
            if isinstance(result, BaseException):
                log.error("unloading component %s failed: %r", live.name, result)
            else:
                log.info("unloaded component %s", live.name)

    async def activate_eager(self) -> int:
        """Activate the instances of each `activate="eager"` component now, not on their first call.

        A singleton is activated even with no stored state; a keyed component activates every
        key that has durable state. Returns how many were activated; raises `ActivationError` when
        an `on_activate` fails. `/ready` waits for this, so background work resumes before the
        server says it can serve.
        """
        self._require_open()
        count = 0
        for live in list(self._components.values()):
            if live.spec.activate != "eager" or not live.spec.stateful:
                continue
            count += await self.engine.run(lambda live=live: self._activate_all(live))  # type: ignore[misc]
        if self.cluster is not None:
            await self.engine.run(lambda: self._start_loop("adopt", self._adopt_orphans))
        return count

    async def _start_loop(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Start one of the host's loops on the engine, once; `aclose` stops and awaits it."""
        if name not in self._loops:
            self._loops[name] = asyncio.create_task(loop(), name=f"statefulmcp-{name}")

    async def _stop_loops(self) -> None:
        loops, self._loops = list(self._loops.values()), {}
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)

    async def _sweep(self) -> None:
        """Passivate idle instances and close expired handles, a few times per shortest idle
        time. Runs on the engine, owned by the host; each passivation is owned by its component."""
        while True:
            await asyncio.sleep(self._sweep_period())
            now = time.monotonic()
            for live in list(self._components.values()):
                # In batches, each awaited (for a while at most): 100,000 instances idle at once
                # would otherwise be 100,000 passivations ready at once, and every other call,
                # tick and the watchdog would queue behind them for seconds.
                while started := live.passivate_idle(now, _SWEEP_BATCH):
                    await asyncio.wait(started, timeout=_SWEEP_BATCH_SECONDS)
                    if len(started) < _SWEEP_BATCH:
                        break
                live.expire_handles(now)

    def _sweep_period(self) -> float:
        limits = [
            seconds
            for live in self._components.values()
            for seconds in (live.idle_seconds, live.spec.handle_idle_seconds)
            if seconds is not None
        ]
        return min(max(min(limits, default=_MAX_SWEEP * 4) / 4, 0.01), _MAX_SWEEP)

    async def _adopt_orphans(self) -> None:
        """With replicas: keep every eager instance running somewhere. Each lease period, claim
        and activate the eager keys no live replica owns (their owner died or left); the claim
        decides between replicas that try at once. Runs on the engine, owned by the host."""
        cluster = self.cluster
        assert cluster is not None
        while True:
            await asyncio.sleep(cluster.membership.lease)
            for live in list(self._components.values()):
                if live.spec.activate != "eager" or not live.spec.stateful or live.closed:
                    continue
                try:
                    orphans = await cluster.ownership.orphans(live.name, singleton=live.spec.key is None)
                    for key in orphans:
                        cluster.forget(live.name, key)  # the owner it remembers is gone
                        with contextlib.suppress(Elsewhere, instances.Stale):  # another replica was first
                            await live.activate(None if live.spec.key is None else key)
                except Exception as exc:  # noqa: BLE001 - tried again next period
                    log.warning("could not adopt eager instances of %s: %s", live.name, exc)

    async def _activate_all(self, live: LiveComponent) -> int:
        """With replicas, each key is activated by the replica that claims it first; the others
        skip it (its owner runs it, and its background work, alone)."""
        keys: list[str | None] = [None]
        if live.spec.key is not None:
            keys = list(await live.store.keys(live.name)) if live.store is not None else []
        count = 0
        for key in keys:
            try:
                await live.activate(key)
            except Elsewhere:
                continue
            count += 1
        return count

    # -- calls to other tools ---------------------------------------------------------------

    def _check_uses(self, spec: ComponentSpec, table: ToolTable) -> None:
        for alias, target in spec.uses.items():
            where = f"component {spec.name!r}: uses alias {alias!r}"
            if not isinstance(alias, str) or not alias.isidentifier() or alias.startswith("_"):
                raise ComponentError(f"{where} must be a public identifier")
            if not isinstance(target, str | Remote):
                raise ComponentError(f"{where} must name a tool or be Remote(url, tool), not {target!r}")
            if isinstance(target, str) and target not in table:
                raise ComponentError(
                    f"{where} names tool {target!r}, which is not loaded; load the component that serves it "
                    "in the same batch (e.g. serve both files) or earlier"
                )

    def _binder(self, spec: ComponentSpec) -> Callable[[Any], None] | None:
        """Give each new object of `spec` an awaitable per `uses` entry (`self.prices(...)`)."""
        if not spec.uses:
            return None
        calls: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {}
        for alias, target in spec.uses.items():
            calls[alias] = self._outbound(spec.name, alias, target)

        def bind(obj: Any) -> None:
            for alias, call in calls.items():
                setattr(obj, alias, call)

        return bind

    def _outbound(self, component: str, alias: str, target: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
        async def call(**arguments: Any) -> Any:
            here = instances.current()
            if here is not None:
                await here.gate()  # what this call sends may depend on writes not yet durable
            if isinstance(target, Remote):
                return await self.remotes.call(target, arguments)
            if target not in self._table:
                raise ToolCallError(
                    f"component {component!r}: uses alias {alias!r} names tool {target!r}, which is not "
                    "loaded any more; load its component again"
                )
            return await self.call(target, arguments)

        return call

    def list(self) -> list[ComponentInfo]:
        """Every loaded component with its tools and live instance count."""
        table = self._table
        return [
            ComponentInfo(
                name=live.name,
                source=live.spec.source,
                stateful=live.spec.stateful,
                key=live.spec.key,
                handles=live.spec.handles,
                durability=live.spec.durability if live.spec.stateful else "none",
                per_session=live.spec.per_session,
                tools=table.of(live),
                instances=len(live.instances),
                details={
                    **live.spec.details,
                    **(live.spec.permissions.describe() if live.spec.permissions is not None else {}),
                    **live.details(),
                },
            )
            for live in self._components.values()
        ]

    async def replica_view(self) -> dict[str, Any] | None:
        """With replicas: this replica, the live ones, and the keys this one owns (live here)."""
        cluster = self.cluster
        if cluster is None:
            return None
        owned: dict[str, list[str | None]] = {}
        for live in self._components.values():
            keys = list(live.instances)
            if keys:
                owned[live.name] = keys[:_SHOWN_KEYS]
        return {
            "id": cluster.replica,
            "url": cluster.membership.advertise,
            "lease_seconds": cluster.membership.lease,
            "live_replicas": await cluster.ownership.replicas(),
            "owned": owned,
        }

    def tools(self) -> ToolTable:
        """Tool name -> entry (its `spec` has the schema and description), for listing."""
        return self._table

    def entry(self, name: str) -> Entry | None:
        return self._table.get(name)

    def prompts(self) -> dict[str, PromptSpec]:
        """Prompt name (`<component>_<name>`) -> its spec, for listing."""
        return {name: prompt for name, (_, prompt) in self._prompts.items()}

    async def get_prompt(
        self,
        name: str,
        arguments: dict[str, str] | None = None,
        *,
        session: str | None = None,
        forwarded: str | None = None,
        token: str | None = None,
        proof: str | None = None,
        session_key: str | None = None,
    ) -> GetPromptResult:
        """Run a prompt the way a tool runs (a turn of its instance, if stateful) for its messages.
        With replicas, it runs on the owner of its instance, forwarded there as a tool call is
        (`forwarded`, `token`, `proof` as for `call_result`; `session_key`: the session key a
        forwarding replica names, with `proof`).

        Raises `ToolInputError` for an unknown prompt or bad arguments (the caller's fault),
        `ToolCallError` for a prompt that failed (`NotOwner` for a forwarded one this replica
        cannot serve).
        """
        hop = Hop(forwarded, token, proof, session_key)
        return await self._on_this_hop(hop, self._get_prompt(name, dict(arguments or {}), session, hop))

    async def _get_prompt(
        self, name: str, arguments: dict[str, str], session: str | None, hop: Hop
    ) -> GetPromptResult:
        if self._life is not _Life.OPEN:
            self._require_open()
        found = self._prompts.get(name)
        if found is None:
            raise ToolInputError(f"unknown prompt {name!r}; list the prompts to see what this server offers")
        live, prompt = found

        async def send(
            client: ClientSession, meta: dict[str, Any], progress: ProgressFnT | None
        ) -> GetPromptResult:
            params = GetPromptRequestParams(
                name=name, arguments=arguments, _meta=cast(RequestParamsMeta, meta)
            )
            return await client.send_request(
                GetPromptRequest(params=params), GetPromptResult, progress_callback=progress
            )

        result: GetPromptResult = await self._run_body(
            "prompt", name, live, prompt.body, arguments, prompt.body.to_result, session, hop, send
        )
        return result

    def resources(self) -> tuple[ResourceSpec, ...]:
        """Every resource and resource template served, in load order, for listing."""
        return tuple(resource for _, resource in self._resources.values())

    async def read_resource(
        self,
        uri: str,
        *,
        session: str | None = None,
        forwarded: str | None = None,
        token: str | None = None,
        proof: str | None = None,
        session_key: str | None = None,
    ) -> ReadResourceResult:
        """Read the resource at `uri`: the static one of that URI, else the first template that
        matches, run the way a tool runs (a turn of its instance, if stateful). With replicas,
        it runs on the owner of its instance, as `get_prompt` says.

        Raises `ToolInputError` for a URI nothing serves or bad parameters (the caller's fault),
        `ToolCallError` for a resource that failed (`NotOwner` for a forwarded one this replica
        cannot serve).
        """
        hop = Hop(forwarded, token, proof, session_key)
        return await self._on_this_hop(hop, self._read_resource(uri, session, hop))

    async def _read_resource(self, uri: str, session: str | None, hop: Hop) -> ReadResourceResult:
        if self._life is not _Life.OPEN:
            self._require_open()
        if uri.startswith(STATE_SCHEME):
            state = self._state_of(uri)
            if state is not None:
                live, key = state
                read: ReadResourceResult = await self.engine.run(lambda: state_resources.read(live, key, uri))
                return read
        found, arguments = self._resources.get(uri), {}
        if found is None or found[1].is_template:
            found = None
            for live, resource in self._resources.values():
                matched = resource.match(uri) if resource.is_template else None
                if matched is not None:
                    found, arguments = (live, resource), matched
                    break
        if found is None:
            raise ToolInputError(
                f"resource {uri!r} not found; list the resources (resources/list) and the templates "
                "(resources/templates/list) to see what this server offers"
            )
        live, resource = found

        async def send(
            client: ClientSession, meta: dict[str, Any], progress: ProgressFnT | None
        ) -> ReadResourceResult:
            params = ReadResourceRequestParams(uri=uri, _meta=cast(RequestParamsMeta, meta))
            return await client.send_request(
                ReadResourceRequest(params=params), ReadResourceResult, progress_callback=progress
            )

        result: ReadResourceResult = await self._run_body(
            "resource", uri, live, resource.body, arguments, resource.reader(uri), session, hop, send
        )
        return result

    def _state_of(self, uri: str) -> tuple[LiveComponent, str | None] | None:
        """The component serving its state at `uri`, and the key it names."""
        parsed = state_resources.parse(uri)
        live = self._components.get(parsed[0]) if parsed is not None else None
        if parsed is None or live is None or not live.spec.state_resource:
            return None
        if (parsed[1] is None) != (live.spec.key is None):
            return None  # a keyed component's state needs its key, a singleton's has none
        return live, parsed[1]

    async def state_resources(self) -> Sequence[Resource]:
        """The state resources of every component that serves its state, a bounded number each."""
        found: tuple[Resource, ...] = ()
        for live in self._serving_state():
            found += tuple(await self.engine.run(lambda live=live: state_resources.listed(live)))  # type: ignore[misc]
        return found

    def state_templates(self) -> Sequence[ResourceTemplate]:
        """The state resource template of every keyed component that serves its state."""
        return [t for live in self._serving_state() if (t := state_resources.template(live)) is not None]

    def _serving_state(self) -> tuple[LiveComponent, ...]:
        return tuple(live for live in self._components.values() if live.spec.state_resource)

    async def _run_body(
        self,
        kind: str,
        name: str,
        live: LiveComponent,
        body: ToolSpec,
        arguments: dict[str, Any],
        finish: Finish,
        session: str | None,
        hop: Hop,
        send: Send[R],
    ) -> R:
        """Run a prompt's or a resource's body as a tool of its component is run, and routed:
        here, or on the replica that owns its instance (`send` asks it there)."""

        def validated() -> dict[str, Any]:
            try:
                return body.validate(arguments)
            except ToolInputError as exc:
                raise ToolInputError(f"invalid arguments for {kind} {name!r}: {exc}") from None

        entry = ComponentTool(body, live, self.engine)
        key = self._named_session(live, hop) or self._session_key(entry, validated(), session)

        async def here() -> R:
            result: R = await self._run(name, entry, validated(), finish, key)
            return result

        try:
            return await here()
        except Elsewhere as where:
            if hop.forwarded is not None:
                raise NotOwner(f"not the owner: {where}; retry") from None
            if key is not None and live.spec.per_session:
                send = _naming_session(send, key)
            try:
                return await self._forward(where, send, here, token=hop.token, session=key, answers=_ANSWERS)
            except MCPError as exc:  # the owner's own answer, an error: the caller's, or the body's
                if exc.error.code == INVALID_PARAMS:
                    raise ToolInputError(exc.error.message) from None
                raise ToolCallError(exc.error.message) from None

    def _named_session(self, live: LiveComponent, hop: Hop) -> str | None:
        """The session key a forwarding replica names for a prompt or a resource (their requests
        have no argument for it), checked as a tool call's is: only with a replica's proof."""
        key = hop.session_key
        if key is None or not live.spec.per_session:
            return None
        if not is_session_key(key) or self.cluster is None or not self.cluster.proven(key, hop.proof):
            raise ToolInputError(
                f"{SESSION}: only a replica forwarding a call may name a session's key; leave it out"
            )
        return key

    async def _on_this_hop(self, hop: Hop, work: Coroutine[Any, Any, R]) -> R:
        """A forwarded request this replica cannot serve (draining, or cut off from the database)
        answers "not the owner": the forwarding replica routes it again (see `call_result`)."""
        try:
            return await work
        except (ToolCallError, HostStateError) as exc:
            if isinstance(exc, NotOwner) or hop.forwarded is None:
                raise
            if self._life is not _Life.OPEN or self._unleased():
                raise NotOwner(f"not the owner: {exc}; retry") from None
            raise

    async def complete(self, name: str, argument: str, typed: str) -> Sequence[str]:
        """The candidates for `argument` of a prompt: its `complete` hook's, else, for the key
        of a keyed component, the keys that exist; none otherwise.

        Raises `ToolInputError` for an unknown prompt, `ToolCallError` for a hook that failed.
        """
        found = self._prompts.get(name)
        if found is None:
            raise ToolInputError(f"unknown prompt {name!r}; list the prompts to see what this server offers")
        live, prompt = found
        return await self._candidates(live, prompt.complete, f"prompt {name!r}", argument, typed)

    async def complete_resource(self, template: str, argument: str, typed: str) -> Sequence[str]:
        """The candidates for a parameter of the resource template `template` (as `complete`).

        Raises `ToolInputError` for a template nothing serves, `ToolCallError` for a failed hook.
        """
        found = self._resources.get(template)
        if found is not None and found[1].is_template:
            live, resource = found
            return await self._candidates(live, resource.complete, f"resource {template!r}", argument, typed)
        for live in self._serving_state():
            served = state_resources.template(live)
            if served is not None and served.uri_template == template:
                return await self._candidates(live, {}, f"resource {template!r}", argument, typed)
        raise ToolInputError(
            f"unknown resource template {template!r}; list the templates (resources/templates/list) to see "
            "what this server offers"
        )

    async def _candidates(
        self,
        live: LiveComponent,
        hooks: Mapping[str, Callable[[str], Any]],
        what: str,
        argument: str,
        typed: str,
    ) -> Sequence[str]:
        hook = hooks.get(argument)
        if hook is None:
            spec = live.spec
            if argument != spec.key or spec.handles or spec.per_session:
                return []  # handles and session keys are secrets: never offered
            keys = await self.engine.run(lambda: state_resources.known_keys(live, typed, _COMPLETED_KEYS))
            return [key for key in keys if key is not None]
        try:
            values = await live.call_user(functools.partial(hook, typed), hold=False)
            refuse_lazy(f"{what} completion", values)
            return [str(v) for v in values]
        except Exception as exc:  # noqa: BLE001 - a hook's own error is its answer, as a tool's is
            raise ToolCallError(
                f"completing {argument!r} of {what} failed: {type(exc).__name__}: {exc}"
            ) from None

    # -- calls ------------------------------------------------------------------------------

    def _resolve(self, name: str, arguments: dict[str, Any] | None) -> tuple[Entry, dict[str, Any]]:
        entry = self._table.get(name)
        if entry is None:
            raise ToolCallError(f"unknown tool {name!r}; list the tools to see what this server offers")
        if arguments is not None and not isinstance(arguments, dict):
            raise ToolCallError(f"invalid arguments for tool {name!r}: arguments must be an object")
        try:
            return entry, entry.spec.validate(arguments or {})
        except ToolInputError as exc:
            raise ToolCallError(f"invalid arguments for tool {name!r}: {exc}") from None

    async def _run(
        self, name: str, entry: Entry, arguments: dict[str, Any], finish: Finish, session: str | None = None
    ) -> Any:
        # A call made from inside a turn (a component using another tool) is part of a call
        # already counted, and must be able to finish while draining.
        task = None if self.engine.on_engine() else asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        try:
            return await entry.run(arguments, finish, session)
        except (ToolCallError, Elsewhere):
            raise
        except asyncio.CancelledError:
            if task is None or task not in self._cut:
                raise
            task.uncancel()
            raise ToolCallError(
                f"the server is shutting down; this call was cancelled after the {self._drain_timeout:g} s "
                "drain timeout. Retry after it restarts"
            ) from None
        except StatefulMCPError as exc:
            # The host's own errors already say what happened and what to do.
            raise ToolCallError(str(exc)) from None
        except Exception as exc:
            # A tool's own exception is its answer, not a server fault: one line, traceback at debug.
            log.info("tool %s raised %s: %s", name, type(exc).__name__, exc)
            log.debug("traceback of tool %s", name, exc_info=exc)
            raise ToolCallError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc
        finally:
            if task is not None:
                self._calls.discard(task)
                if not self._calls:
                    self._idle.set()

    def _session_key(
        self, entry: Entry, validated: dict[str, Any], session: str | None, *, proof: object = None
    ) -> str | None:
        """The key of the caller's MCP session for a per-session tool, resolved once per call.

        A forwarded call carries the key the forwarding replica resolved in `SESSION_ARGUMENT`,
        with that replica's proof (`Cluster.prove`): the forwarded marker alone is only a
        `_meta` entry any client could set. From anyone else, that argument is a handle,
        checked as one.
        """
        live = entry.component
        if live is None or not live.spec.per_session:
            return None
        if is_session_key(validated.get(SESSION_ARGUMENT)):
            key: str = validated.pop(SESSION_ARGUMENT)
            if self.cluster is None or not self.cluster.proven(key, proof):
                raise ToolCallError(
                    f"{SESSION_ARGUMENT}: {key!r} is not a handle of {live.name!r}; only a replica forwarding "
                    f"a call may name a session's key. Call {live.name}_open for a handle"
                )
            return key
        return None if session is None else session_key(session)

    async def call(
        self, name: str, arguments: dict[str, Any] | None = None, *, session: str | None = None
    ) -> Any:
        """Call a tool in-process; returns a copy of what it returned, made inside its turn.

        Raises `ToolCallError` on failure. With replicas, a call whose instance another replica
        owns is forwarded there. `session` names the caller's MCP session (any text only the
        caller knows): per-session components keep one instance per session.
        """
        if self._life is not _Life.OPEN:
            self._require_open(draining_ok=self.engine.on_engine())
        entry, validated = self._resolve(name, arguments)
        key = self._session_key(entry, validated, session)
        try:
            return await self._run(name, entry, validated, functools.partial(_private_copy, name), key)
        except Elsewhere as where:
            result = await self._forward_tool(where, name, arguments or {}, token=None, session=key)
            if result.is_error:
                raise ToolCallError(_text_of(result)) from None
            return result_value(result)

    async def call_result(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        forwarded: str | None = None,
        token: str | None = None,
        session: str | None = None,
        proof: str | None = None,
    ) -> CallToolResult:
        """Call a tool and return the MCP result; failures become `isError` results, never raise,
        except `ClientCapabilityError` (the tool asked the client for what it cannot answer),
        which the protocol answers with an error of its own.

        `forwarded` names the replica that forwarded this call (it is never forwarded again);
        `token` is the caller's bearer token, passed on when the call must be forwarded;
        `session` is the caller's MCP session (the `Mcp-Session-Id` of a 2025-11-25 client,
        `per_session.STDIO_SESSION` over stdio, None for a sessionless client); `proof` is a
        forwarding replica's proof of the session key it names (`cluster.PROOF`).
        """
        try:
            if self._life is not _Life.OPEN:
                self._require_open()
            entry, validated = self._resolve(name, arguments)
            key = self._session_key(entry, validated, session, proof=proof)
            try:
                result: CallToolResult = await self._run(name, entry, validated, entry.spec.to_result, key)
                return result
            except Elsewhere as where:
                if forwarded is not None:
                    return _not_owner(str(where))
                return await self._forward_tool(where, name, arguments or {}, token=token, session=key)
        except ClientCapabilityError:
            raise  # the transport answers it as the protocol's missing-capability error
        except (ToolCallError, ToolResultError, HostStateError) as exc:
            if forwarded is not None and (self._life is not _Life.OPEN or self._unleased()):
                # Draining: the forwarding replica waits for the hand-off. Unleased (cut off from
                # the database): it must forget this owner and claim the key once the lease
                # expires, or it would forward here, and fail, for as long as the cut lasts.
                return _not_owner(str(exc))
            return tool_result_text(str(exc), error=True)

    def _unleased(self) -> bool:
        return self.cluster is not None and not self.cluster.membership.valid()

    async def _forward_tool(
        self,
        where: Elsewhere,
        name: str,
        arguments: dict[str, Any],
        *,
        token: str | None,
        session: str | None = None,
    ) -> CallToolResult:
        """Forward a tool call to the owner (see `_forward`).

        A call keyed by the caller's session (`session`) carries that key to the owner in
        `SESSION_ARGUMENT`, so the owner routes it to the same instance.
        """
        sent = arguments if session is None else {**arguments, SESSION_ARGUMENT: session}

        async def send(
            client: ClientSession, meta: dict[str, Any], progress: ProgressFnT | None
        ) -> CallToolResult:
            return await client.call_tool(
                name, sent, progress_callback=progress, meta=cast(RequestParamsMeta, meta)
            )

        async def here() -> CallToolResult:
            entry, validated = self._resolve(name, arguments)
            result: CallToolResult = await self._run(name, entry, validated, entry.spec.to_result, session)
            return result

        return await self._forward(where, send, here, token=token, session=session)

    async def _forward(
        self,
        where: Elsewhere,
        send: Send[R],
        here: Callable[[], Awaitable[R]],
        *,
        token: str | None,
        session: str | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> R:
        """Send a request to the owner. When the owner is gone or draining, wait for its keys to
        move (its lease to expire, or its hand-off) and route it again (`here` runs it on this
        replica, or raises `Elsewhere`), within a bound.

        What the owner's tool logs and reports on the way reaches the caller of the request in
        progress (its `Context`), before the answer. `session` is a session key the request
        names, proven to the owner.
        """
        cluster = self.cluster
        assert cluster is not None
        caller = context.current()
        deadline = time.monotonic() + 2 * cluster.membership.lease + 1.0
        while True:
            result, why = await cluster.forward(
                where, send, token=token, context=caller, prove=session, answers=answers
            )
            if result is not None and not (result.meta or {}).get(NOT_OWNER):
                return result
            if result is not None:
                why = _text_of(result)
            if time.monotonic() > deadline:
                raise ToolCallError(
                    f"{where.component}[{where.key!r}] could not be reached: {why}; retry the call"
                )
            await asyncio.sleep(min(0.1, cluster.membership.lease / 10))
            try:
                return await here()
            except Elsewhere as moved:
                where = moved

    async def session_ended(self, session: str) -> None:
        """The transport's hook: a client's MCP session ended (DELETE, idle eviction, closed).

        A session never comes back, so each per-session component deactivates that session's
        instance (`on_deactivate`, commit) and deletes its durable state, as closing a handle
        does. Returns once that is handed to the engine (each component owns its part).
        """
        if self._life not in (_Life.OPEN, _Life.DRAINING):
            return
        lives = [live for live in self._components.values() if live.spec.per_session and not live.closed]
        if not lives:
            return
        key = session_key(session)

        async def end() -> None:
            for live in lives:
                live.end_session_soon(key)

        await self.engine.run(end)


def _prompt_table(components: dict[str, LiveComponent]) -> dict[str, tuple[LiveComponent, PromptSpec]]:
    """Every prompt of `components` by its full name; two of one name refuse the load."""
    table: dict[str, tuple[LiveComponent, PromptSpec]] = {}
    for live in components.values():
        for prompt in live.spec.prompts:
            name = f"{live.name}_{prompt.name}"
            if name in table:
                raise ComponentError(
                    f"prompt {name!r} of component {live.name!r} is already served by component "
                    f"{table[name][0].name!r}; nothing was loaded. Rename one of them"
                )
            table[name] = (live, prompt)
    return table


def _resource_table(components: dict[str, LiveComponent]) -> dict[str, tuple[LiveComponent, ResourceSpec]]:
    """Every resource of `components` by its URI (or template); one URI served twice refuses the load."""
    table: dict[str, tuple[LiveComponent, ResourceSpec]] = {}
    for live in components.values():
        for resource in live.spec.resources:
            if resource.uri.startswith(STATE_SCHEME):
                raise ComponentError(
                    f"resource {resource.uri!r} of component {live.name!r}: the state:// scheme is the host's "
                    "(it serves a component's state with state_resource=True); give it another scheme"
                )
            if resource.uri in table:
                raise ComponentError(
                    f"resource {resource.uri!r} of component {live.name!r} is already served by component "
                    f"{table[resource.uri][0].name!r}; nothing was loaded. Give one of them another URI"
                )
            table[resource.uri] = (live, resource)
    return table


def _text_of(result: Result) -> str:
    return " ".join(getattr(block, "text", "") for block in getattr(result, "content", ()))


def _naming_session(send: Send[R], key: str) -> Send[R]:
    """`send`, naming the session key `key` to the owner (proven by `Cluster.forward`)."""

    async def sending(client: ClientSession, meta: dict[str, Any], progress: ProgressFnT | None) -> R:
        return await send(client, {**meta, SESSION: key}, progress)

    return sending


def _not_owner(why: str) -> CallToolResult:
    """The answer to a forwarded call this replica cannot serve: the forwarding replica routes
    the call again (this one never forwards a forwarded call: one hop at most)."""
    result = tool_result_text(f"not the owner: {why}; retry", error=True)
    result.meta = {NOT_OWNER: True}
    return result
