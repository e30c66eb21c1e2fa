"""Instances of a loaded component: activation, serialized turns, and deactivation.

Everything here runs on the engine loop. A stateful instance's turns are serialized by a FIFO
lock: a call holds it from the first line of the tool body to the last, across every `await`,
so two calls never interleave on one instance while different instances run concurrently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Callable
from typing import Any

from statefulmcp.components import ComponentSpec, InstanceLost, ToolSpec

log = logging.getLogger("statefulmcp.instances")


class CallError(Exception):
    """A call that cannot be routed or run; the message is what the caller sees."""


class Instance:
    """One live object of a stateful component, with the lock that serializes its turns."""

    __slots__ = ("activated", "key", "lock", "obj")

    def __init__(self, key: str | None, obj: Any) -> None:
        self.key = key
        self.obj = obj
        self.lock = asyncio.Lock()
        self.activated = False


async def run_sync_held(fn: Callable[[], Any]) -> Any:
    """Run a sync tool body on a worker thread; the caller keeps its turn until the body returns.

    A sync body cannot be interrupted in Python, so when the awaiting call is cancelled this
    still waits for the thread to finish before letting the cancellation through: the instance
    is never released while its code is still running.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, fn)
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


class Component:
    """A loaded component on the engine: its spec, its live instances and its open handles."""

    def __init__(self, spec: ComponentSpec) -> None:
        self.spec = spec
        self.instances: dict[str | None, Instance] = {}
        self.handles: set[str] = set()
        self.closed = False

    @property
    def live_count(self) -> int:
        return len(self.instances)

    async def call(self, tool: ToolSpec, arguments: dict[str, Any]) -> Any:
        """Route one validated call to its instance and run it as a turn."""
        spec = self.spec
        if self.closed:
            raise CallError(f"component {spec.name!r} was unloaded; list the tools again")
        if not spec.stateful:
            return await invoke(tool, self._new_object(), arguments)
        key = self._key_of(arguments)
        instance = self.instances.get(key)
        if instance is None:
            instance = self.instances[key] = Instance(key, None)
        await instance.lock.acquire()
        try:
            if self.instances.get(key) is not instance:
                raise CallError(f"the instance for {spec.key}={key!r} was closed while this call waited")
            if not instance.activated:
                await self._activate(instance)
            try:
                return await invoke(tool, instance.obj, arguments)
            except InstanceLost:
                self._drop(instance)
                raise
        finally:
            instance.lock.release()

    def _key_of(self, arguments: dict[str, Any]) -> str | None:
        spec = self.spec
        if spec.key is None:
            return None
        value = arguments.get(spec.key)
        key = value if isinstance(value, str) else str(value)
        if spec.handles and key not in self.handles:
            raise CallError(
                f"unknown or closed handle {key!r} for component {spec.name!r}; "
                f"call {spec.name}_open to get a new one"
            )
        return key

    async def _activate(self, instance: Instance) -> None:
        try:
            instance.obj = self._new_object()
            hook = getattr(instance.obj, "on_activate", None)
            if hook is not None and asyncio.iscoroutinefunction(hook):
                await hook()
            elif hook is not None:
                await run_sync_held(hook)
        except BaseException:
            self._drop(instance)
            raise
        instance.activated = True

    def _new_object(self) -> Any:
        obj = self.spec.new_instance()
        if self.spec.binds_context:
            obj.state = {}
        return obj

    def _drop(self, instance: Instance) -> None:
        if self.instances.get(instance.key) is instance:
            del self.instances[instance.key]
        close = self.spec.close_instance
        if close is not None and instance.obj is not None:
            try:
                close(instance.obj)
            except Exception:
                log.exception("closing an instance of %s failed", self.spec.name)

    def open_handle(self) -> str:
        """Mint an unguessable handle (192 random bits); its instance is created on first use."""
        handle = secrets.token_urlsafe(24)
        self.handles.add(handle)
        return handle

    async def close_handle(self, handle: str) -> bool:
        """Forget a handle and drop its instance, after any turn in progress on it."""
        if handle not in self.handles:
            return False
        self.handles.discard(handle)
        instance = self.instances.get(handle)
        if instance is not None:
            async with instance.lock:
                await self._deactivate(instance)
        return True

    async def _deactivate(self, instance: Instance) -> None:
        """Drop an instance, running its `on_deactivate` hook first; hook errors are logged."""
        obj = instance.obj
        self._drop(instance)
        if obj is None or not instance.activated:
            return
        hook = getattr(obj, "on_deactivate", None)
        if hook is None:
            return
        try:
            if asyncio.iscoroutinefunction(hook):
                await hook()
            else:
                await run_sync_held(hook)
        except Exception:
            log.exception("on_deactivate of %s (key %r) failed", self.spec.name, instance.key)

    async def close(self) -> None:
        """Deactivate every instance (each after its current turn) and refuse further calls."""
        self.closed = True
        for instance in list(self.instances.values()):
            async with instance.lock:
                await self._deactivate(instance)
        self.instances.clear()
        self.handles.clear()
