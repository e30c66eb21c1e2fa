"""MCP over stdin/stdout, answering every line: the SDK's stdio transport behind a line checker.

The SDK drops a line it cannot parse, a batch, or a request with an id it cannot represent,
and sends no reply: a client waiting on that id waits forever. Over HTTP the same input gets
400. Here every such line gets the JSON-RPC error the spec gives (-32700 parse error,
-32600 invalid request), written through the SDK's own writer, and serving goes on.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from io import TextIOWrapper
from typing import Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectSendStream
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

_ID = re.compile(r'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")')


def _error(code: int, message: str, request_id: str | int | None = None) -> SessionMessage:
    error = types.JSONRPCError(
        jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message)
    )
    return SessionMessage(error)


def _id_hint(line: str) -> str | int | None:
    """The request id of a line too deep to parse, read from its start (best effort)."""
    match = _ID.search(line[:512])
    if match is None:
        return None
    try:
        found = json.loads(match.group(1))
    except ValueError:
        return None
    return found if isinstance(found, str | int) else None


def check_line(line: str) -> SessionMessage | None:
    """The error reply a line deserves, or None when the SDK can take it as it is."""
    try:
        message: Any = json.loads(line)
    except RecursionError:
        return _error(types.INVALID_REQUEST, "Invalid request: nested too deeply", _id_hint(line))
    except ValueError as exc:
        return _error(types.PARSE_ERROR, f"Parse error: {exc}")
    if isinstance(message, list):
        return _error(types.INVALID_REQUEST, "Invalid request: JSON-RPC batches are not supported by MCP")
    if not isinstance(message, dict):
        return _error(types.INVALID_REQUEST, "Invalid request: a message must be a JSON object")
    request_id = message.get("id")
    if "id" in message and (isinstance(request_id, bool) or not isinstance(request_id, str | int)):
        return _error(types.INVALID_REQUEST, "Invalid request: `id` must be a string or an integer")
    try:
        types.jsonrpc_message_adapter.validate_python(message, by_name=False)
    except RecursionError:
        return _error(types.INVALID_REQUEST, "Invalid request: nested too deeply", request_id)
    except ValueError as exc:
        return _error(types.INVALID_REQUEST, f"Invalid request: {str(exc).splitlines()[0]}", request_id)
    return None


class _CheckedLines:
    """stdin as the SDK reads it, less the lines that get an error reply instead."""

    def __init__(self) -> None:
        self._stdin = anyio.wrap_file(TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace"))
        self.replies: MemoryObjectSendStream[SessionMessage] | None = None
        self.ready = anyio.Event()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for line in self._stdin:
            if not line.strip():
                continue
            error = check_line(line)
            if error is None:
                yield line
                continue
            await self.ready.wait()
            assert self.replies is not None
            await self.replies.send(error)


@asynccontextmanager
async def checked_stdio() -> AsyncIterator[tuple[Any, Any]]:
    """`stdio_server()` whose every incoming line is answered (see the module docs)."""
    lines = _CheckedLines()
    async with stdio_server(stdin=lines) as (read, write):  # type: ignore[arg-type]
        lines.replies = write
        lines.ready.set()
        yield read, write
