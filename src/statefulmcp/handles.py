"""Handles: keys the host mints itself, so clients without a session get their own instance.

A handle is 192 random bits, so it cannot be guessed. An open handle has a marker row in the
store (so handles survive a restart); a call with a handle that is unknown or closed is refused
and never creates an instance. Closing marks the handle closed in memory first, so calls queued
behind the close are refused at once, then drops its instance and deletes its rows.
"""

from __future__ import annotations

import secrets
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
    """The open handles of one component (engine loop only)."""

    def __init__(self, component: str, store: Store | None) -> None:
        self.component = component
        self.store = store
        self._open: set[str] = set()
        self._closed: set[str] = set()
        self._closes = 0

    async def open(self) -> str:
        """Mint a handle; its instance is created on first use."""
        handle = secrets.token_urlsafe(24)
        if self.store is not None:
            await self.store.commit([Change(self.component, handle, {OPEN_MARK: "true"})])
        self._open.add(handle)
        return handle

    def add(self, handle: str) -> None:
        """Take a handle known to be open (eager activation of stored instances)."""
        self._open.add(handle)

    async def check(self, handle: str) -> None:
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
            self._open.add(handle)
        if handle in self._open:
            return
        raise ToolCallError(
            f"unknown or closed handle {handle!r} for component {self.component!r}; "
            f"call {self.component}_open to get a new one"
        )

    async def close(self, live: LiveComponent, handle: str) -> bool:
        """Close `handle`: refuse its later calls, drop its instance, delete its durable state."""
        try:
            await self.check(handle)
        except ToolCallError:
            return False
        self._open.discard(handle)
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
