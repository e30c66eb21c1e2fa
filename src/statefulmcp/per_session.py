"""Per-session instances: one instance of an unmodified component per MCP conversation.

`key` and `handles` select an instance by an argument, so every tool must take one, and an
off-the-shelf component (a `.wasm` file whose WIT nobody will change) can only be one instance
per load. `per_session=True` selects the instance by the caller's MCP session instead:

- a 2025-11-25 client over HTTP has a session (`Mcp-Session-Id`); its calls share one instance,
  keyed by `session_key(session id)`: a hash, so the id (which only that client holds) never
  appears in a key, a log line or a listing, and cannot be recovered from one;
- over stdio the one client is the session (`STDIO_SESSION`);
- a 2026-07-28 client has no session: it calls `<name>_open` for a handle (192 random bits,
  the `Handles` machinery: checked, closed, expired, durable) and passes it in
  `SESSION_ARGUMENT`, an optional argument the host adds to every tool's input schema and
  strips before the tool's own validation, so the tool never sees it. A client with a session
  may pass one too, and the handle wins: a conversation can move between eras.

The transport says which session a call belongs to (`Host.call_result(session=...)`) and when a
session ends (`Host.session_ended`); it never learns what an instance is.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from statefulmcp._errors import ComponentError, ToolCallError, ToolInputError
from statefulmcp._options import SESSION_ARGUMENT
from statefulmcp.components import ToolSpec

__all__ = ["SESSION_ARGUMENT", "STDIO_SESSION", "is_session_key", "session_key", "with_session_argument"]

STDIO_SESSION = "stdio"
"""The session of every call over stdio: the process serves exactly one client."""

_PREFIX = "session:"
"""Derived keys start with this; minted handles (URL-safe base64) never contain a colon."""


def session_key(session: str) -> str:
    """The instance key of a client's MCP session: 128 bits of its SHA-256."""
    digest = hashlib.sha256(session.encode("utf-8", "surrogatepass")).hexdigest()
    return _PREFIX + digest[:32]


def is_session_key(value: object) -> bool:
    """Whether `value` has the shape of a key `session_key` derives (not of a minted handle)."""
    return isinstance(value, str) and value.startswith(_PREFIX)


def no_session(component: str) -> ToolCallError:
    """The error of a sessionless call that did not say which conversation it belongs to."""
    return ToolCallError(
        f"component {component!r} keeps one instance per session, and this call has none (a 2026-07-28 "
        f"client, or a call from another tool); call {component}_open first and pass the handle it "
        f"returns as {SESSION_ARGUMENT!r} to every {component} tool"
    )


def with_session_argument(component: str, tool: ToolSpec) -> ToolSpec:
    """`tool` with an optional `SESSION_ARGUMENT` in its input schema, taken out again before
    the tool's own validation (it may refuse unknown arguments) and before its body runs."""
    properties = tool.input_schema.get("properties", {})
    if SESSION_ARGUMENT in properties:
        raise ComponentError(
            f"component {component!r} is per-session, and the host adds the argument {SESSION_ARGUMENT!r} "
            f"to its tools, but tool {tool.name!r} already has one; rename that parameter"
        )
    schema = {
        **tool.input_schema,
        "properties": {
            **properties,
            SESSION_ARGUMENT: {
                "type": "string",
                "description": f"for clients without an MCP session: the handle {component}_open returned",
            },
        },
    }
    validate_own, call_own = tool.validate, tool.call

    def validate(arguments: dict[str, Any]) -> dict[str, Any]:
        if SESSION_ARGUMENT not in arguments:
            return validate_own(arguments)
        rest = dict(arguments)
        handle = rest.pop(SESSION_ARGUMENT)
        if not isinstance(handle, str):
            raise ToolInputError(f"{SESSION_ARGUMENT}: expected the handle string {component}_open returned")
        return {**validate_own(rest), SESSION_ARGUMENT: handle}

    def call(instance: Any, arguments: dict[str, Any]) -> Any:
        if SESSION_ARGUMENT in arguments:
            arguments = {k: v for k, v in arguments.items() if k != SESSION_ARGUMENT}
        return call_own(instance, arguments)

    return dataclasses.replace(tool, input_schema=schema, validate=validate, call=call)
