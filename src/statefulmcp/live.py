"""A loaded component's live instances: routing by key, activation, passivation and close.

A `LiveComponent` exists from load to unload. Stateless calls get a fresh object each; stateful
calls are routed by key to an `Instance` (made on first use) and run as its turns. Unload and
replace first refuse new turns and fail parked waiters at once, then deactivate each instance
after its current turn, with `on_deactivate` and the wait for the turn bounded in time, so a
hook that never returns cannot hold shutdown or the next load hostage.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from statefulmcp._errors import ActivationError, ToolCallError
from statefulmcp.background import Background, LoopStats
from statefulmcp.cluster import Cluster
from statefulmcp.components import ComponentSpec, ToolSpec
from statefulmcp.engine import Engine, SyncSlots
from statefulmcp.handles import Handles
from statefulmcp.instances import Instance, Stale, cancel_requested, exit_error, stray_cancel_error
from statefulmcp.per_session import no_session
from statefulmcp.state import Store
from statefulmcp.state.view import NoState
from statefulmcp.updates import Updates, check_uri, instance_uris

log = logging.getLogger("statefulmcp.live")

_PER_INSTANCE_STATS = 20
"""How many instances `list_components` details one by one (the most-late first)."""


async def _no_wait(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("wait_until needs a stateful component: a stateless instance lives for one call")


class Residency:
    """The host-wide bound on live stateful instances, and the host's default idle time.

    Each `LiveComponent` keeps its instances least recently called first; this object counts
    them across components, so `max_instances` bounds the whole host (past it, the least recently
    used idle instance anywhere is passivated), and names the default `idle_seconds`, which
    applies to durable components only: passivating one of those loses nothing.
    """

    def __init__(
        self,
        lives: Callable[[], Iterable[LiveComponent]],
        *,
        max_instances: int | None,
        idle_seconds: float | None,
    ) -> None:
        self.lives = lives
        self.max_instances = max_instances
        self.idle_seconds = idle_seconds
        self.live = 0
        """Live stateful instances in all components, those being passivated included."""
        self.going = 0
        """Of those, how many are being passivated (chosen, their `on_deactivate` not yet done)."""

    def admit(self) -> None:
        """Make room for one more instance: past the bound, passivate the least recently used
        idle one; with none idle, refuse (a bound that only warns is no bound)."""
        limit = self.max_instances
        if limit is None or self.live - self.going < limit:
            return
        victims = [(v.last_used, live, v) for live in self.lives() if (v := live.least_recent_idle())]
        if not victims:
            raise ToolCallError(
                f"the host has {limit} live instances and none is idle (--max-instances / "
                "Host(max_instances=...)); retry when a call finishes, or raise the bound"
            )
        _, live, victim = min(victims, key=lambda item: item[0])
        live.passivate_soon(
            victim,
            f"passivated: the host keeps at most {limit} live instances",
            bound=f"at most {limit} live instances in the host (--max-instances)",
        )


class LiveComponent:
    """A loaded component on the engine: its spec, its live instances and its open handles.

    `bind(obj)` is the host's hook to give a new Python object its wiring (calls to other tools).
    """

    def __init__(
        self,
        spec: ComponentSpec,
        *,
        engine: Engine,
        store: Store | None,
        max_call_seconds: float | None,
        hook_seconds: float,
        sync_limit: int,
        bind: Callable[[Any], None] | None = None,
        cluster: Cluster | None = None,
        residency: Residency | None = None,
        max_waiters: int | None = None,
        updates: Updates | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.engine = engine
        self.store = store if spec.stateful and spec.durability == "turn" else None
        self.cluster = cluster if spec.stateful else None
        """With replicas: every stateful instance is claimed before it activates (one owner)."""
        self.max_call_seconds = max_call_seconds
        self.hook_seconds = hook_seconds
        self.bind = bind
        self.slots = SyncSlots(sync_limit)
        self.residency = residency or Residency(list, max_instances=None, idle_seconds=None)
        self.max_waiters = max_waiters
        """Calls parked in `wait_until` per instance, at most (None: no bound)."""
        self.instances: dict[str | None, Instance] = {}
        """Live instances, least recently called first."""
        self.evicted: dict[str | None, str] = {}
        """Keys whose instance was evicted with its in-memory state, and why; oldest first."""
        self.handles = Handles(spec.name, self.store, spec.handle_idle_seconds) if spec.handles else None
        self.sessions_ended: dict[str, None] = {}
        """Per-session components: session keys whose session ended (recent ones, oldest first);
        a call still queued for one is refused instead of making its instance again."""
        self.closed = False
        self.updates = updates
        """Where a commit's updated resource URIs go (the transport listens); None in-process."""
        self._uris = instance_uris(spec)
        self.ended = {name: LoopStats() for name, _ in spec.backgrounds}
        self._reaping: set[asyncio.Task[Any]] = set()

    # -- calls ----------------------------------------------------------------------------------

    async def call(
        self,
        tool: ToolSpec,
        arguments: dict[str, Any],
        finish: Callable[[Any], Any],
        session: str | None = None,
    ) -> Any:
        """Route one validated call to its instance and run it as a turn, within its time limit.

        `session` is the key of the caller's MCP session (`per_session.session_key`), which
        selects the instance of a per-session component unless the call passes a handle.
        """
        limit = self._limit(tool)
        if limit is None:
            return await self._call(tool, arguments, finish, session)
        deadlines = self.engine.deadlines
        token = deadlines.start(limit)
        try:
            return await self._call(tool, arguments, finish, session)
        except asyncio.CancelledError:
            if not deadlines.end(token):
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise ToolCallError(
                f"tool {self.name}_{tool.name} exceeded its time limit of {limit:g} s ({self._source(tool)}); "
                "it was cancelled"
            ) from None
        finally:
            deadlines.end(token)

    async def call_here(self, tool: ToolSpec, arguments: dict[str, Any], finish: Callable[[Any], Any]) -> Any:
        """A stateless call on the caller's own loop (sync bodies need no engine), within its limit."""
        if self.closed:
            raise self._unloaded()
        limit = self._limit(tool)
        timer = asyncio.timeout(limit)
        try:
            async with timer:
                value = await self.invoke(tool, self.new_object(None), arguments, hold=False)
        except TimeoutError:
            if not timer.expired():
                raise
            raise ToolCallError(
                f"tool {self.name}_{tool.name} exceeded its time limit of {limit:g} s ({self._source(tool)}); "
                "its caller was answered and its worker thread ends when the body returns"
            ) from None
        return finish(value)

    def _per_tool(self, tool: ToolSpec) -> bool:
        """Whether the tool's own `@tool(timeout=...)` is the limit (it is, unless the cap is lower)."""
        cap = self.max_call_seconds
        return tool.timeout is not None and (cap is None or tool.timeout <= cap)

    def _limit(self, tool: ToolSpec) -> float | None:
        return tool.timeout if self._per_tool(tool) else self.max_call_seconds

    def _source(self, tool: ToolSpec) -> str:
        """Where the limit `_limit` chose was set, for the error (built only when one fires)."""
        if self._per_tool(tool):
            return f"@tool(timeout={tool.timeout:g})"
        cap = self.max_call_seconds
        return f"the server-wide limit, --max-call-seconds {cap:g} or Host(max_call_seconds={cap:g})"

    async def _call(
        self, tool: ToolSpec, arguments: dict[str, Any], finish: Callable[[Any], Any], session: str | None
    ) -> Any:
        if self.closed:
            raise self._unloaded()
        if not self.spec.stateful:
            return finish(await self.invoke(tool, self.new_object(None), arguments, hold=False))
        while True:
            key = await self._key_of(arguments, session)
            instance = self.instances.get(key)
            if instance is None:
                if self.evicted:
                    self._told_evicted(key)
                if self.spec.max_instances is not None:
                    self._make_room(key, self.spec.max_instances)
                instance = self._new_instance(key)
            else:
                self.instances[key] = self.instances.pop(key)  # most recently used last
            instance.last_used = time.monotonic()
            try:
                return await instance.turn(self._body(tool, instance, arguments), finish)
            except ActivationError as exc:
                # Said here, not at eager activation: there a failure stops start-up instead.
                raise ActivationError(f"{exc}; the next call tries again") from exc.__cause__
            except Stale:
                if self.closed:
                    raise self._unloaded() from None
                if self.instances.get(key) is instance:
                    raise ToolCallError(f"{instance.label} is being deactivated; retry the call") from None
            finally:
                instance.last_used = time.monotonic()

    def _new_instance(self, key: str | None) -> Instance:
        """A new, not yet activated instance for `key`, counted against the host's bound."""
        self.residency.admit()
        instance = self.instances[key] = Instance(self, key)
        instance.last_used = time.monotonic()
        self.residency.live += 1
        return instance

    def _body(
        self, tool: ToolSpec, instance: Instance, arguments: dict[str, Any]
    ) -> Callable[[], Awaitable[Any]]:
        """The turn's body, with no coroutine layer of ours between the turn and the tool.

        `SystemExit`, `KeyboardInterrupt` and `GeneratorExit` raised in it are turned into errors
        by the turn.
        """
        if tool.is_async:
            return lambda: tool.call(instance.obj, arguments)
        return lambda: self.slots.run(functools.partial(tool.call, instance.obj, arguments), self._pool)

    @property
    def _pool(self) -> Any:
        """Where this component's sync code runs: Wasm calls on their own pool, so a hung sandbox
        cannot take the threads Python sync tools run on."""
        return self.engine.wasm_pool if self.spec.sandboxed else self.engine.pool

    def _unloaded(self) -> ToolCallError:
        return ToolCallError(f"component {self.name!r} was unloaded; list the tools again")

    async def _key_of(self, arguments: dict[str, Any], session: str | None = None) -> str | None:
        if self.spec.key is None:
            return None
        value = arguments.get(self.spec.key)
        if self.spec.per_session and value is None:
            if session is None:
                raise no_session(self.name)
            if session in self.sessions_ended:
                raise ToolCallError(f"the session of this call ended; {self.name} has no instance for it")
            return session  # derived by the host from the caller's own session: nothing to check
        key = value if isinstance(value, str) else str(value)
        try:
            key.encode()
        except UnicodeEncodeError:
            raise ToolCallError(
                f"{self.spec.key}: {key!r} contains a lone surrogate, which is not valid Unicode text"
            ) from None
        if self.handles is not None:
            await self.handles.check(key)
        return key

    async def invoke(self, tool: ToolSpec, obj: Any, arguments: dict[str, Any], *, hold: bool = True) -> Any:
        """Run one tool body: awaited here if async, on a worker thread of this component if sync."""
        return await self.call_user(
            functools.partial(tool.call, obj, arguments), is_async=tool.is_async, hold=hold
        )

    async def call_user(
        self, fn: Callable[[], Any] | None, *, is_async: bool | None = None, hold: bool = True
    ) -> Any:
        """Run user code (a body, a hook, a background method); sync code goes to a worker thread.

        `SystemExit`, `KeyboardInterrupt` and `GeneratorExit` from user code (argparse inside a
        tool raises one) fail this call only: left alone they would stop the engine thread or the
        transport. So does a `CancelledError` the code raised itself when nobody cancelled the call.
        """
        if fn is None:
            return None
        if is_async is None:
            is_async = asyncio.iscoroutinefunction(fn)
        try:
            if is_async:
                return await fn()
            return await self.slots.run(fn, self._pool, hold=hold)
        except asyncio.CancelledError:
            if cancel_requested():
                raise
            raise stray_cancel_error(self.name) from None
        except (SystemExit, KeyboardInterrupt, GeneratorExit) as exc:
            raise exit_error(self.name, exc) from None

    # -- objects and activation -----------------------------------------------------------------

    def new_object(self, instance: Instance | None) -> Any:
        obj = self.spec.new_instance()
        if self.spec.binds_context:
            if instance is None:
                obj.state, obj.key, obj.wait_until = NoState(self.name), None, _no_wait
                obj.resource_updated = self.announce
            else:
                obj.state, obj.key, obj.wait_until = instance.view, instance.key, instance.wait_until
                obj.resource_updated = instance.resource_updated
            if self.bind is not None:
                self.bind(obj)
        return obj

    def committed(self, key: str | None, announced: set[str], *, changed: bool) -> None:
        """An instance's commit landed: post the URIs it updated (see `statefulmcp.updates`)."""
        updates = self.updates
        if updates is None or not updates.heard:
            return
        updates.post((*self._uris(key), *announced) if changed else announced)

    def announce(self, uri: str) -> None:
        """`self.resource_updated(uri)` of a stateless call: it has no commit to wait for."""
        uri = check_uri(uri)
        if self.updates is not None:
            self.updates.post((uri,))

    def start_background(self, instance: Instance) -> None:
        methods = [(name, decl.every) for name, decl in self.spec.backgrounds]
        if methods:
            instance.background = Background(instance, self.engine, methods)
            instance.background.start()

    async def activate(self, key: str | None) -> None:
        """Activate the instance for `key` now, without a call (eager activation)."""
        instance = self.instances.get(key)
        if instance is None:
            instance = self._new_instance(key)
        if key is not None and self.handles is not None:
            self.handles.add(key)

        async def nothing() -> None:
            return None

        await instance.turn(nothing)

    def _make_room(self, key: str | None, limit: int) -> None:
        """Before a new instance: evict the least recently used idle one while at `limit`.

        An evicted instance's in-memory state is gone, and its key's next call says so once (as
        after a trap) before starting afresh: state must never vanish without a word.
        """
        while len(self.instances) >= limit:
            idle = next(
                (
                    i
                    for i in self.instances.values()
                    if not (i.lock.locked() or i.waiters or i.away or i.activating)
                ),
                None,
            )
            if idle is None:
                raise ToolCallError(
                    f"{self.name} has {limit} live instances, all in a call (the policy's limits.instances); "
                    "retry when one finishes, or raise limits.instances"
                )
            self.drop(idle, "evicted")
            log.info("evicted %s: at most %d live instances (limits.instances)", idle.label, limit)
            if idle.activated:
                self._remember_evicted(
                    idle.key, f"at most {limit} live instances (the policy's limits.instances)"
                )

    def _remember_evicted(self, key: str | None, why: str) -> None:
        """An instance whose in-memory state is lost: its key's next call says so once (as after a
        trap) before starting afresh, so state never vanishes without a word."""
        self.evicted[key] = why
        while len(self.evicted) > 4 * max(len(self.instances), 1024):  # remembered for a while, not forever
            del self.evicted[next(iter(self.evicted))]

    def _told_evicted(self, key: str | None) -> None:
        why = self.evicted.pop(key, None)
        if why is not None:
            raise ToolCallError(
                f"{self.name}[{key!r}] was evicted to keep {why}, and its in-memory state was lost; "
                "the next call starts a fresh instance"
            )

    # -- dropping -------------------------------------------------------------------------------

    def drop(self, instance: Instance, reason: str) -> None:
        """Forget `instance` now: fail its waiters, stop its background work, refuse its commits."""
        if instance.dropped is None:
            instance.dropped = reason
        if self.instances.get(instance.key) is instance:
            del self.instances[instance.key]
            self.residency.live -= 1
        instance.fail_waiters()
        if instance.background is not None:
            for name, stats in instance.background.stats.items():
                self.ended[name].add(stats)
            for task in instance.background.cancel():
                self._reaping.add(task)
                task.add_done_callback(self._reaping.discard)
            instance.background = None
        close = self.spec.close_instance
        if close is not None and instance.obj is not None:
            try:
                close(instance.obj)
            except Exception:
                log.exception("closing an instance of %s failed", self.name)
        # An `Instance` sits in reference cycles (its view calls back into it), so it lives until
        # the cyclic collector runs; what its object holds, a Wasm Store's linear memory above
        # all, is let go now. A body still running keeps its own reference.
        instance.obj = None

    # -- passivation ----------------------------------------------------------------------------

    @property
    def idle_seconds(self) -> float | None:
        """How long an instance may go without a call before it is passivated (None: forever).

        The component's own `idle_seconds` wins; the host's default applies only where passivating
        loses nothing: durable state in a store, no background work, lazy activation.
        """
        spec = self.spec
        if not spec.stateful or spec.activate == "eager" or spec.backgrounds:
            return None
        if spec.idle_seconds is not None:
            return spec.idle_seconds
        return self.residency.idle_seconds if self.store is not None else None

    @staticmethod
    def _idle(instance: Instance) -> bool:
        """Nothing runs, waits or is in flight on `instance`, and it is not already on its way out."""
        return not (
            instance.lock.locked()
            or instance.waiters
            or instance.away
            or instance.activating
            or instance.background is not None
            or instance.pending is not None
            or instance.ending is not None
            or instance.dropped is not None
            or instance.going
        )

    def least_recent_idle(self, scan: int = 64) -> Instance | None:
        """The least recently called idle instance among the oldest `scan` (for the host's bound)."""
        if self.spec.activate == "eager" or self.spec.backgrounds:
            return None
        for n, instance in enumerate(self.instances.values()):
            if n >= scan:
                break
            if self._idle(instance):
                return instance
        return None

    def passivate_idle(self, now: float, most: int) -> list[asyncio.Future[None]]:
        """Start passivating up to `most` of the instances idle for longer than `idle_seconds`
        (oldest first; stops at the first one called recently, since every later one was called
        more recently still), and return their passivations."""
        limit = self.idle_seconds
        started: list[asyncio.Future[None]] = []
        if limit is None or self.closed:
            return started
        for instance in self.instances.values():  # nothing below changes the dict: no copy
            if len(started) >= most or now - instance.last_used < limit:
                break
            if self._idle(instance):
                started.append(self.passivate_soon(instance, f"passivated after {limit:g} s without a call"))
        return started

    def end_session_soon(self, key: str) -> None:
        """A client's MCP session ended, and a session never comes back: deactivate its instance
        (`on_deactivate`, commit) and delete its durable state, as closing a handle does. The
        work is owned by this component (awaited at unload), not by the transport's teardown."""
        self.sessions_ended[key] = None
        while len(self.sessions_ended) > 4096:  # remembered for calls still queued, not forever
            del self.sessions_ended[next(iter(self.sessions_ended))]
        task = asyncio.ensure_future(self._end_session(key))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _end_session(self, key: str) -> None:
        try:
            await self.passivate(key, reason="ended with its session")
            if self.store is not None:
                await self.store.delete_instance(self.name, key)
        except Exception:
            log.exception("%s: could not drop the instance of an ended session", self.name)

    def expire_handles(self, now: float) -> None:
        """Close the handles not called for longer than `handle_idle_seconds` (instance and state)."""
        if self.handles is None or self.closed:
            return
        for handle in self.handles.expired(now):
            log.info(
                "%s[%r]: handle expired after %g s without a call",
                self.name,
                handle,
                self.handles.idle_seconds,
            )
            task = asyncio.ensure_future(self.handles.close(self, handle))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    def passivate_soon(
        self, instance: Instance, reason: str, *, bound: str | None = None
    ) -> asyncio.Future[None]:
        """Start passivating `instance` (owned by this component's reaping set); a call that slips
        in first keeps it, and one queued behind the passivation activates it afresh.

        `bound`: passivated to keep a bound, not because the component asked for it; an instance
        without a store then loses its in-memory state, and its next call is told.
        """
        instance.going = True
        self.residency.going += 1
        if bound is not None and self.store is None and instance.activated:
            self._remember_evicted(instance.key, bound)
        task = asyncio.ensure_future(self._passivate(instance, reason, instance.last_used))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)
        return task

    async def _passivate(self, instance: Instance, reason: str, used: float) -> None:
        try:
            await instance.acquire_for_end()
            if (
                instance.last_used != used
                or instance.waiters
                or instance.away
                or instance.dropped is not None
            ):
                self.evicted.pop(instance.key, None)
                instance.release_after_end()  # called meanwhile: not idle any more
                return
            instance.ending = reason
            await self._end(instance, reason)
            log.debug("%s", f"{instance.label} {reason}")
        finally:
            instance.going = False
            self.residency.going -= 1
        if self.cluster is not None and instance.epoch is not None and not self.closed:
            try:  # the others may claim it at once, not after a lease
                await self.cluster.ownership.release(self.name, instance.store_key, instance.epoch)
            except Exception as exc:  # noqa: BLE001 - the key stays ours until the lease ends
                log.warning("could not release %s after passivating it: %s", instance.label, exc)

    async def passivate(self, key: str | None, *, reason: str) -> None:
        """Deactivate the instance for `key`, if live (a closed handle)."""
        instance = self.instances.get(key)
        if instance is not None:
            await self._deactivate(instance, reason)

    async def _deactivate(self, instance: Instance, reason: str) -> None:
        """Refuse new turns and fail waiters, then after the current turn: stop background work,
        run `on_deactivate` (its writes commit too), drop. Errors are logged, never swallowed."""
        instance.ending = reason
        instance.fail_waiters()
        try:
            async with asyncio.timeout(self.hook_seconds):
                await instance.acquire_for_end()
        except TimeoutError:
            log.error(
                "%s: its current turn did not end within %g s; dropping it without on_deactivate",
                instance.label,
                self.hook_seconds,
            )
            self.drop(instance, reason)
            return
        await self._end(instance, reason)

    async def _end(self, instance: Instance, reason: str) -> None:
        """With the turn taken: stop background work, run `on_deactivate` and commit, drop."""
        try:
            if instance.background is not None:
                await instance.background.stop()
            if instance.activated and instance.obj is not None:
                await self._on_deactivate(instance)
        finally:
            self.drop(instance, reason)
            instance.release_after_end()

    async def _on_deactivate(self, instance: Instance) -> None:
        try:
            async with asyncio.timeout(self.hook_seconds):
                # hold=False: a sync hook's thread cannot be interrupted, so the bound stops the
                # wait for it; the instance is dropped and nothing the hook writes after is kept.
                await self.call_user(getattr(instance.obj, "on_deactivate", None), hold=False)
            await instance.commit()
        except TimeoutError:
            instance.view.rollback()
            log.error(
                "on_deactivate of %s did not return within %g s; abandoned", instance.label, self.hook_seconds
            )
        except (Exception, asyncio.CancelledError) as exc:
            instance.view.rollback()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.exception("on_deactivate of %s failed", instance.label)

    async def close(self) -> None:
        """Deactivate every instance (each after its current turn) and refuse further calls."""
        self.closed = True
        await asyncio.gather(*(self._deactivate(i, "unloaded") for i in list(self.instances.values())))
        self.instances.clear()
        if self.handles is not None:
            self.handles.clear()
        await asyncio.gather(*self._reaping, return_exceptions=True)

    # -- introspection --------------------------------------------------------------------------

    def details(self) -> dict[str, Any]:
        """Live introspection for `list_components`: waiting calls, sync threads, background health."""
        # Called from the transport thread: copy before iterating what the engine mutates.
        instances = list(self.instances.values())
        out: dict[str, Any] = {"waiters": sum(len(i.waiters) for i in instances)}
        if self.slots.busy or self.slots.queued:
            out["sync_threads"] = {
                "busy": self.slots.busy,
                "queued": self.slots.queued,
                "limit": self.slots.limit,
            }
        if self.ended:
            out["background"] = self._background_details(instances)
        return out

    def _background_details(self, instances: list[Instance]) -> dict[str, Any]:
        totals = {name: LoopStats() for name in self.ended}
        per: list[tuple[float, str, str, LoopStats]] = []
        for instance in instances:
            background = instance.background
            if background is None:
                continue
            for name, stats in list(background.stats.items()):
                totals[name].add(stats)
                worst = max(stats.lateness[-1000:], default=0.0)
                per.append((worst, instance.store_key, name, stats))
        for name, stats in self.ended.items():
            totals[name].add(stats)
        out: dict[str, Any] = {name: stats.summary() for name, stats in totals.items()}
        if self.spec.key is not None:
            per.sort(key=lambda item: item[0], reverse=True)  # the latest first: the one to look at
            for name in out:
                out[name]["instances"] = [
                    {"key": key, **stats.summary()} for _, key, method, stats in per if method == name
                ][:_PER_INSTANCE_STATS]
        return out
