"""Instances of a loaded component: activation, serialized turns, waits, background ticks, deactivation.

Everything here runs on the engine loop. A stateful instance's turns are serialized by a FIFO
lock: a call holds it from the first line of the tool body to the last, across every `await`,
so two calls never interleave on one instance while different instances run concurrently.

The end of a turn is where durability happens: the turn's writes to `self.state` are committed
to the store before the lock is released and before the reply leaves (the output gate). A turn
that raises is rolled back and commits nothing. `wait_until` splits a turn in two at the wait,
with the same commit at the split.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from statefulmcp.components import ComponentSpec, InstanceLost, ToolSpec
from statefulmcp.engine import Deadlines, sleep_until
from statefulmcp.state import Change, Store
from statefulmcp.state.view import StateView

log = logging.getLogger("statefulmcp.instances")

_HANDLE_MARK = "\x00open"
"""A row every open handle has in the store, so handles survive a restart."""

# The instances whose turns the current task is inside, outermost first: a call that would need
# one of them again would wait on itself forever, so it is refused instead.
_held: contextvars.ContextVar[tuple[Instance, ...]] = contextvars.ContextVar("statefulmcp_held", default=())


class CallError(Exception):
    """A call that cannot be routed or run; the message is what the caller sees."""


class _Stale(Exception):
    """The instance a call waited for was dropped meanwhile (a trap, a close); route it again."""


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], object]
    future: asyncio.Future[None]


@dataclass(slots=True)
class LoopStats:
    """What `list_components` shows about one background method across all instances."""

    ticks: int = 0
    skipped: int = 0
    failures: int = 0
    last_error: str | None = None
    lateness: list[float] = field(default_factory=list)

    def record_lateness(self, seconds: float) -> None:
        self.lateness.append(seconds)
        if len(self.lateness) > 20_000:
            del self.lateness[:10_000]

    def summary(self) -> dict[str, Any]:
        late = sorted(self.lateness)

        def pick(q: float) -> float | None:
            return round(late[min(len(late) - 1, int(q * len(late)))] * 1e6, 1) if late else None

        return {
            "ticks": self.ticks,
            "skipped": self.skipped,
            "failures": self.failures,
            "last_error": self.last_error,
            "lateness_us": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
        }


class Instance:
    """One live object of a stateful component, with the lock that serializes its turns."""

    __slots__ = ("activated", "holder", "key", "lock", "obj", "tasks", "view", "waiters")

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.obj: Any = None
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[Any] | None = None
        self.activated = False
        self.view = StateView()
        self.waiters: list[_Waiter] = []
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def store_key(self) -> str:
        return "" if self.key is None else self.key


async def run_sync_held(fn: Callable[[], Any]) -> Any:
    """Run a sync tool body on a worker thread; the caller keeps its turn until the body returns.

    A sync body cannot be interrupted in Python, so when the awaiting call is cancelled this
    still waits for the thread to finish before letting the cancellation through: the instance
    is never released while its code is still running.
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        raise


async def invoke(tool: ToolSpec, obj: Any, arguments: dict[str, Any]) -> Any:
    """Run one tool body: awaited on the engine loop if async, on a worker thread if sync."""
    if tool.is_async:
        return await tool.call(obj, arguments)
    return await run_sync_held(functools.partial(tool.call, obj, arguments))


async def _call_hook(obj: Any, name: str) -> None:
    hook = getattr(obj, name, None)
    if hook is None:
        return
    if asyncio.iscoroutinefunction(hook):
        await hook()
    else:
        await run_sync_held(hook)


class Component:
    """A loaded component on the engine: its spec, its live instances and its open handles.

    `bind(obj)` is the host's hook to give a new Python object its wiring (calls to other tools);
    the component itself gives it `state` and `wait_until`.
    """

    def __init__(
        self,
        spec: ComponentSpec,
        *,
        store: Store | None = None,
        max_call_seconds: float | None = None,
        deadlines: Deadlines | None = None,
        bind: Callable[[Any], None] | None = None,
    ) -> None:
        self.spec = spec
        self.deadlines = deadlines or Deadlines()
        self.store = store if spec.durability == "turn" else None
        self.max_call_seconds = max_call_seconds
        self.bind = bind
        self.instances: dict[str | None, Instance] = {}
        self.handles: set[str] = set()
        self.closed = False
        self.loops: dict[str, LoopStats] = {name: LoopStats() for name, _ in spec.backgrounds}

    @property
    def live_count(self) -> int:
        return len(self.instances)

    # -- calls ------------------------------------------------------------------------------

    async def call(self, tool: ToolSpec, arguments: dict[str, Any]) -> Any:
        """Route one validated call to its instance and run it as a turn, within its time limit."""
        limit, source = self._limit(tool)
        if limit is None:
            return await self._call(tool, arguments)
        token = self.deadlines.start(limit)
        try:
            return await self._call(tool, arguments)
        except asyncio.CancelledError:
            if not self.deadlines.end(token):
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            raise CallError(
                f"tool {self.spec.name}_{tool.name} exceeded its time limit of {limit:g} s ({source}); "
                "it was cancelled"
            ) from None
        finally:
            self.deadlines.end(token)

    def _limit(self, tool: ToolSpec) -> tuple[float | None, str]:
        if tool.timeout is not None and (
            self.max_call_seconds is None or tool.timeout <= self.max_call_seconds
        ):
            return tool.timeout, f"@tool(timeout={tool.timeout:g})"
        if self.max_call_seconds is None:
            return None, "no limit"
        return self.max_call_seconds, f"--max-call-seconds {self.max_call_seconds:g}"

    async def _call(self, tool: ToolSpec, arguments: dict[str, Any]) -> Any:
        spec = self.spec
        if self.closed:
            raise CallError(f"component {spec.name!r} was unloaded; list the tools again")
        if not spec.stateful:
            return await invoke(tool, self._new_object(None), arguments)
        while True:
            key = await self._key_of(arguments)
            instance = self.instances.get(key)
            if instance is None:
                instance = self.instances[key] = Instance(key)
            try:
                return await self.turn(
                    instance, functools.partial(self._invoke_on, tool, instance, arguments)
                )
            except _Stale:
                if self.closed:
                    raise CallError(f"component {spec.name!r} was unloaded; list the tools again") from None

    @staticmethod
    async def _invoke_on(tool: ToolSpec, instance: Instance, arguments: dict[str, Any]) -> Any:
        return await invoke(tool, instance.obj, arguments)

    async def turn(self, instance: Instance, body: Callable[[], Awaitable[Any]]) -> Any:
        """Run `body` as one turn of `instance`: activate first if needed, commit at the end."""
        held = _held.get()
        if instance in held:
            chain = " -> ".join(
                f"{self.spec.name}[{i.key!r}]" if i.key is not None else self.spec.name for i in held
            )
            raise CallError(
                f"deadlock refused: this call would wait on its own instance ({chain} -> itself); "
                "an instance cannot call a tool of itself, directly or through a cycle"
            )
        await self._acquire(instance)
        token = _held.set((*held, instance))
        try:
            if self.instances.get(instance.key) is not instance:
                raise _Stale
            if not instance.activated:
                await self._activate(instance)
            try:
                value = await body()
            except InstanceLost:
                self._drop(instance)
                raise
            except BaseException:
                # A call cancelled while parked in wait_until does not hold the turn: the writes
                # in the view then belong to whichever turn does, and are not ours to undo.
                if instance.holder is asyncio.current_task():
                    instance.view.rollback()
                raise
            await self._commit(instance)
            return value
        finally:
            _held.reset(token)
            self._release(instance)

    async def _acquire(self, instance: Instance) -> None:
        await instance.lock.acquire()
        instance.holder = asyncio.current_task()

    def _release(self, instance: Instance) -> None:
        """End the current task's hold on the turn (if it has one) and wake satisfied waiters."""
        if instance.holder is not asyncio.current_task() or not instance.lock.locked():
            return
        instance.holder = None
        self._wake(instance)
        instance.lock.release()

    def _wake(self, instance: Instance) -> None:
        for waiter in instance.waiters:
            if waiter.future.done():
                continue
            try:
                ready = waiter.predicate()
            except Exception as exc:
                waiter.future.set_exception(exc)
                continue
            if ready:
                waiter.future.set_result(None)

    async def _commit(self, instance: Instance) -> None:
        view = instance.view
        if not view.dirty:
            return
        if self.store is None:
            view.accept()
            return
        try:
            names = view.changes()
            await self.store.commit([Change(self.spec.name, instance.store_key, names)])
        except BaseException:
            view.rollback()
            raise
        view.accept()

    async def _key_of(self, arguments: dict[str, Any]) -> str | None:
        spec = self.spec
        if spec.key is None:
            return None
        value = arguments.get(spec.key)
        key = value if isinstance(value, str) else str(value)
        if spec.handles and key not in self.handles and not await self._stored_handle(key):
            raise CallError(
                f"unknown or closed handle {key!r} for component {spec.name!r}; call {spec.name}_open to get a new one"
            )
        return key

    async def _stored_handle(self, key: str) -> bool:
        if self.store is None:
            return False
        if _HANDLE_MARK in await self.store.load(self.spec.name, key):
            self.handles.add(key)
            return True
        return False

    # -- waits ------------------------------------------------------------------------------

    async def wait_until(
        self, instance: Instance, predicate: Callable[[], object], timeout: float | None = None
    ) -> None:
        """Release the turn until `predicate()` holds, then take it back (see the module docs).

        Bound to each instance as `self.wait_until(predicate, timeout=...)`.
        """
        if predicate():
            return
        if instance.holder is not asyncio.current_task():
            raise RuntimeError("wait_until can only be awaited inside a tool call or tick of this instance")
        await self._commit(instance)
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        instance.waiters.append(waiter)
        self._release(instance)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await waiter.future
                    await self._acquire(instance)
                    if predicate():
                        return
                    waiter.future = asyncio.get_running_loop().create_future()
                    self._release(instance)
        except TimeoutError:
            await self._acquire(instance)
            raise TimeoutError(
                f"wait_until timed out after {timeout:g} s; the condition never held"
            ) from None
        finally:
            instance.waiters.remove(waiter)

    # -- activation and deactivation --------------------------------------------------------

    def _new_object(self, instance: Instance | None) -> Any:
        obj = self.spec.new_instance()
        if self.spec.binds_context:
            obj.state = instance.view if instance is not None else StateView()
            if instance is not None:
                obj.wait_until = functools.partial(self.wait_until, instance)
            if self.bind is not None:
                self.bind(obj)
        return obj

    async def _activate(self, instance: Instance) -> None:
        """Load state, build the object, run `on_activate`, commit, start background work."""
        try:
            if self.store is not None:
                instance.view = StateView.from_rows(await self.store.load(self.spec.name, instance.store_key))
            instance.obj = self._new_object(instance)
            await _call_hook(instance.obj, "on_activate")
            await self._commit(instance)
        except BaseException:
            self._drop(instance)
            raise
        instance.activated = True
        for name, decl in self.spec.backgrounds:
            work = (
                self._loop(instance, name) if decl.every is None else self._ticks(instance, name, decl.every)
            )
            # A fresh context: the loop outlives this turn and must not count as inside it.
            task = asyncio.create_task(work, name=f"{self.spec.name}.{name}", context=contextvars.Context())
            instance.tasks.append(task)

    async def activate(self, key: str | None) -> None:
        """Activate the instance for `key` now, without a call (eager activation)."""
        instance = self.instances.get(key)
        if instance is None:
            instance = self.instances[key] = Instance(key)
        if key is not None and self.spec.handles:
            self.handles.add(key)

        async def nothing() -> None:
            return None

        await self.turn(instance, nothing)

    def _drop(self, instance: Instance) -> None:
        if self.instances.get(instance.key) is instance:
            del self.instances[instance.key]
        for task in instance.tasks:
            task.cancel()
        close = self.spec.close_instance
        if close is not None and instance.obj is not None:
            try:
                close(instance.obj)
            except Exception:
                log.exception("closing an instance of %s failed", self.spec.name)

    async def _deactivate(self, instance: Instance) -> None:
        """Stop background work, run `on_deactivate` (its writes commit too), drop the instance.

        Errors are logged, never swallowed silently, and never stop the other instances.
        """
        tasks, instance.tasks = instance.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if instance.activated and instance.obj is not None:
            try:
                await _call_hook(instance.obj, "on_deactivate")
                await self._commit(instance)
            except Exception:
                instance.view.rollback()
                log.exception("on_deactivate of %s (key %r) failed", self.spec.name, instance.key)
        self._drop(instance)

    async def _deactivate_held(self, instance: Instance) -> None:
        await self._acquire(instance)
        try:
            await self._deactivate(instance)
        finally:
            self._release(instance)

    async def close(self) -> None:
        """Deactivate every instance (each after its current turn) and refuse further calls."""
        self.closed = True
        await asyncio.gather(*(self._deactivate_held(i) for i in list(self.instances.values())))
        self.instances.clear()
        self.handles.clear()

    # -- handles ----------------------------------------------------------------------------

    async def open_handle(self) -> str:
        """Mint an unguessable handle (192 random bits); its instance is created on first use."""
        handle = secrets.token_urlsafe(24)
        if self.store is not None:
            await self.store.commit([Change(self.spec.name, handle, {_HANDLE_MARK: "true"})])
        self.handles.add(handle)
        return handle

    async def close_handle(self, handle: str) -> bool:
        """Forget a handle: drop its instance (after any turn in progress) and its durable state."""
        if handle not in self.handles and not await self._stored_handle(handle):
            return False
        self.handles.discard(handle)
        instance = self.instances.get(handle)
        if instance is not None:
            await self._deactivate_held(instance)
        if self.store is not None:
            await self.store.delete_instance(self.spec.name, handle)
        return True

    # -- background work --------------------------------------------------------------------

    async def _loop(self, instance: Instance, name: str) -> None:
        """A plain `@background` loop: restarted with capped exponential backoff if it raises."""
        stats = self.loops[name]
        backoff = 0.1
        while True:
            try:
                await getattr(instance.obj, name)()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(stats, name, instance, exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def _ticks(self, instance: Instance, name: str, period: float) -> None:
        """A `@background(every=...)` tick: each one a turn, on a fixed, drift-free schedule.

        Tick n is due at start + n * period whatever happened before, so a late tick does not
        shift the next ones; ticks more than a period behind are skipped and counted. A failing
        tick is logged and retried after a capped exponential backoff.
        """
        stats = self.loops[name]
        method = getattr(instance.obj, name)
        clock = time.perf_counter
        start = clock()
        n = 1
        backoff = 0.0
        while True:
            due = start + n * period
            if due > clock():
                await sleep_until(due)
            late = clock() - due
            if late > period:
                behind = int(late // period)
                stats.skipped += behind
                n += behind
                due = start + n * period
                late = clock() - due
            stats.record_lateness(max(late, 0.0))
            n += 1
            try:
                await self.turn(instance, method)
                stats.ticks += 1
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(stats, name, instance, exc)
                backoff = min(max(backoff * 2, period, 0.05), 30.0)
                await asyncio.sleep(backoff)
                start, n = clock(), 1

    def _failed(self, stats: LoopStats, name: str, instance: Instance, exc: BaseException) -> None:
        stats.failures += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        log.error(
            "background %s.%s (key %r) raised; restarting with backoff\n%s",
            self.spec.name,
            name,
            instance.key,
            "".join(traceback.format_exception(exc)),
        )

    def details(self) -> dict[str, Any]:
        """Live introspection for `list_components`: waiting calls and background loop health."""
        # Called from the transport thread: copy before iterating what the engine mutates.
        out: dict[str, Any] = {"waiters": sum(len(i.waiters) for i in list(self.instances.values()))}
        if self.loops:
            out["background"] = {name: stats.summary() for name, stats in self.loops.items()}
        return out
