"""Handles: keys the host mints itself, so clients without a session get their own instance.

A handle is 192 random bits, so it cannot be guessed. An open handle has a marker row in the
store (so handles survive a restart); a call with a handle that is unknown or closed is refused
and never creates an instance. Closing marks the handle closed in memory first, so calls queued
behind the close are refused at once, then drops its instance and deletes its rows.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING, Any

from mcp_types import CallToolResult

from statefulmcp._errors import ToolCallError, ToolInputError
from statefulmcp.components import ToolSpec, tool_result_text
from statefulmcp.state import Change, Store

if TYPE_CHECKING:
    from statefulmcp.live import LiveComponent

OPEN_MARK = "\x00open"
"""A row every open handle has in the store, so handles survive a restart."""


class Handles:
    """The open handles of one component (engine loop only).

    With `idle_seconds`, a handle not called for that long expires: it is refused like a closed
    one, and the sweep closes it (its instance and durable state go). Its store mark holds the
    wall-clock time it was last refreshed (at most every quarter of the idle time), so a handle
    also expires across a restart.
    """

    def __init__(self, component: str, store: Store | None, idle_seconds: float | None = None) -> None:
        self.component = component
        self.store = store
        self.idle_seconds = idle_seconds
        self._open: dict[str, tuple[float, float]] = {}
        """Open handles, least recently called first -> (last call, last mark), `time.monotonic()`."""
        self._closed: set[str] = set()
        self._closes = 0

    async def open(self) -> str:
        """Mint a handle; its instance is created on first use."""
        handle = secrets.token_urlsafe(24)
        if self.store is not None:
            await self.store.commit([Change(self.component, handle, {OPEN_MARK: _mark()})])
        now = time.monotonic()
        self._open[handle] = (now, now)
        return handle

    def add(self, handle: str) -> None:
        """Take a handle known to be open (eager activation of stored instances)."""
        now = time.monotonic()
        self._open.setdefault(handle, (now, now))

    async def check(self, handle: str) -> None:
        """Raise unless `handle` is open and not expired; count this as a call on it."""
        await self._known(handle)
        now = time.monotonic()
        used, marked = self._open[handle]
        idle = self.idle_seconds
        if idle is not None:
            if now - used > idle:
                raise self._refused(handle)
            if self.store is not None and now - marked > idle / 4:
                await self.store.commit([Change(self.component, handle, {OPEN_MARK: _mark()})])
                marked = now
                if handle not in self._open:  # closed while the mark was written
                    raise self._refused(handle)
        self._open.pop(handle, None)
        self._open[handle] = (now, marked)

    async def _known(self, handle: str) -> None:
        """Raise unless `handle` is open (known here, or marked open in the store).

        A read that a close overtook may predate the close's delete: it is read again, or an
        answer from before the close would mark the handle open for good.
        """
        while handle not in self._open and handle not in self._closed and self.store is not None:
            closes = self._closes
            rows = await self.store.load(self.component, handle)
            if closes != self._closes:
                continue
            if OPEN_MARK not in rows:
                break
            age = _age(rows[OPEN_MARK])
            if self.idle_seconds is not None and age > self.idle_seconds:
                break  # expired while nobody had it in memory (across a restart)
            now = time.monotonic()
            self._open[handle] = (now - age, now - age)
        if handle not in self._open:
            raise self._refused(handle)

    def _refused(self, handle: str) -> ToolCallError:
        expiry = "" if self.idle_seconds is None else f" (or expired: unused for {self.idle_seconds:g} s)"
        return ToolCallError(
            f"unknown or closed handle {handle!r} for component {self.component!r}{expiry}; "
            f"call {self.component}_open to get a new one"
        )

    def expired(self, now: float) -> list[str]:
        """The handles not called for longer than `idle_seconds` (for the sweep to close)."""
        idle = self.idle_seconds
        if idle is None:
            return []
        found = []
        for handle, (used, _) in self._open.items():
            if now - used <= idle:
                break
            found.append(handle)
        return found

    async def close(self, live: LiveComponent, handle: str) -> bool:
        """Close `handle`: refuse its later calls, drop its instance, delete its durable state."""
        try:
            await self._known(handle)
        except ToolCallError:
            return False
        self._open.pop(handle, None)
        self._closed.add(handle)
        self._closes += 1
        await live.passivate(handle, reason="closed")
        try:
            if self.store is not None:
                await self.store.delete_instance(self.component, handle)
        finally:
            # Reads queue behind the delete, so from here on the store itself answers "closed".
            self._closed.discard(handle)
        return True

    def clear(self) -> None:
        self._open.clear()


def _mark() -> str:
    """A handle's store mark: the wall-clock time it was written (its age survives a restart)."""
    return repr(time.time())


def _age(mark: str) -> float:
    """Seconds since a mark was written; 0 for a mark of an older version, which held `true`."""
    try:
        return max(0.0, time.time() - float(mark))
    except ValueError:
        return 0.0


def _as_result(value: Any) -> CallToolResult:
    result = tool_result_text(str(value).lower() if isinstance(value, bool) else str(value))
    result.structured_content = {"result": value}
    return result


def handle_tools(component: str, key: str) -> tuple[ToolSpec, ToolSpec]:
    """The `<name>_open` / `<name>_close` tool specs of a component with handles."""

    def validate_close(arguments: dict[str, Any]) -> dict[str, Any]:
        value = arguments.get(key)
        if not isinstance(value, str) or set(arguments) != {key}:
            raise ToolInputError(f"{key}: a handle string is required, and nothing else")
        return {key: value}

    def validate_open(arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments:
            raise ToolInputError(f"{next(iter(arguments))}: unknown argument; this tool takes none")
        return {}

    def unused(instance: Any, arguments: dict[str, Any]) -> Any:
        raise AssertionError("handle tools run on the component, not on an instance")

    def result_schema(kind: str) -> dict[str, Any]:
        return {"type": "object", "properties": {"result": {"type": kind}}, "required": ["result"]}

    open_spec = ToolSpec(
        name="open",
        description=f"Open a new {component} instance and return its handle; pass it as `{key}` to the other tools.",
        input_schema={"type": "object", "properties": {}, "additionalProperties": False},
        output_schema=result_schema("string"),
        validate=validate_open,
        call=unused,
        is_async=True,
        to_result=_as_result,
    )
    close_spec = ToolSpec(
        name="close",
        description=f"Close a {component} handle and drop its instance.",
        input_schema={
            "type": "object",
            "properties": {key: {"type": "string"}},
            "required": [key],
            "additionalProperties": False,
        },
        output_schema=result_schema("boolean"),
        validate=validate_close,
        call=unused,
        is_async=True,
        to_result=_as_result,
    )
    return open_spec, close_spec
