"""MCP over stdin/stdout, answering every line: the SDK's stdio transport behind a line checker.

The SDK drops a line it cannot parse, a batch, or a request with an id it cannot represent,
and sends no reply: a client waiting on that id waits forever. Over HTTP the same input gets
400. Here every such line gets the JSON-RPC error the spec gives (-32700 parse error,
-32600 invalid request), written through the SDK's own writer, and serving goes on.

stdin is read here, not by the SDK, for two more reasons: a line is bounded (the SDK's HTTP
body limit), and stopping never waits on a blocked read. A read of stdin cannot be cancelled, so
the SDK's reader kept a stopped server alive until the client closed its end of the pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from mcp.shared.message import SessionMessage

MAX_LINE_BYTES = DEFAULT_MAX_REQUEST_BODY_SIZE
"""The longest line served; a longer one is answered -32600 and skipped, never buffered whole."""

_ID = re.compile(r'"id"\s*:\s*(-?\d+|"(?:[^"\\]|\\.)*")')
_TOO_LONG = object()


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


def split_lines(chunks: Iterator[bytes], limit: int) -> Iterator[bytes | object]:
    """The lines in `chunks` (without their newline); `_TOO_LONG` in place of one over `limit`.

    A line over the limit is dropped as it streams in, so memory stays bounded by `limit`.
    """
    pending = b""
    skipping = False
    for chunk in chunks:
        pending += chunk
        while (end := pending.find(b"\n")) >= 0:
            line, pending = pending[:end], pending[end + 1 :]
            if skipping:
                skipping = False
            elif len(line) > limit:
                yield _TOO_LONG
            else:
                yield line
        if len(pending) > limit:
            if not skipping:
                yield _TOO_LONG
            skipping = True
            pending = b""
    if pending and not skipping:
        yield pending


def _too_long() -> SessionMessage:
    return _error(types.INVALID_REQUEST, f"Invalid request: a line is limited to {MAX_LINE_BYTES} bytes")


class _StdinLines:
    """Lines of a private copy of fd 0, read on a daemon thread: `close()` ends them at once.

    The thread reads with `os.read` (no buffered-reader lock, which a daemon thread still blocked
    at interpreter exit would make fatal), and blocks while a line waits to be taken, so an
    eager client cannot grow a queue without bound.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | object | None] = asyncio.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._pump, name="statefulmcp-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """End the lines now, whether or not the reading thread is blocked."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def _chunks(self) -> Iterator[bytes]:
        while chunk := os.read(self._fd, 65536):
            yield chunk

    def _pump(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the fd or the loop closed under us: stop
            for line in split_lines(self._chunks(), MAX_LINE_BYTES):
                asyncio.run_coroutine_threadsafe(self._queue.put(line), self._loop).result()
            asyncio.run_coroutine_threadsafe(self._queue.put(None), self._loop).result()

    async def __aiter__(self) -> AsyncIterator[bytes | object]:
        while (line := await self._queue.get()) is not None:
            yield line


class _Pending:
    """Request ids forwarded to the SDK and not yet answered, so stopping can wait for the last
    answers (the "shutting down" errors of calls cut at the drain timeout) before input ends."""

    def __init__(self) -> None:
        self._ids: set[str | int] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def forwarded(self, line: str) -> None:
        message = json.loads(line)
        if "id" in message and "method" in message:
            self._ids.add(message["id"])
            self._idle.clear()
        elif message.get("method") == "notifications/cancelled":
            # A cancelled request gets no answer (MCP spec), so it is no longer awaited.
            self._settle((message.get("params") or {}).get("requestId"))

    def sent(self, message: types.JSONRPCMessage) -> None:
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            self._settle(message.id)

    def _settle(self, request_id: Any) -> None:
        self._ids.discard(request_id)
        if not self._ids:
            self._idle.set()

    async def answered(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()


class _TrackedWrite:
    """The SDK's write stream, noting each answer in `_Pending`."""

    def __init__(self, inner: Any, pending: _Pending) -> None:
        self._inner = inner
        self._pending = pending

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        self._pending.sent(item.message)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _TrackedWrite:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class CheckedStdin:
    """stdin as the SDK reads it, less the lines that get an error reply instead."""

    def __init__(self, lines: _StdinLines) -> None:
        self._lines = lines
        self.pending = _Pending()
        self.replies: Any = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._checked()

    async def _checked(self) -> AsyncIterator[str]:
        async for raw in self._lines:
            line = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else ""
            if raw is not _TOO_LONG and not line.strip():
                continue
            error = _too_long() if raw is _TOO_LONG else check_line(line)
            if error is None:
                self.pending.forwarded(line)
                yield line
            else:
                await self.replies.send(error)


@dataclass(frozen=True, slots=True)
class StdioChannel:
    """The streams to serve on, and `finish()` to end them without waiting on the client."""

    read: Any
    write: Any
    _stdin: CheckedStdin
    _lines: _StdinLines

    async def finish(self, timeout: float) -> None:
        """Wait up to `timeout` for every forwarded request to be answered, then end input, as
        a client closing stdin would: the SDK's session then ends by itself."""
        await self._stdin.pending.answered(timeout)
        self._lines.close()


@contextlib.contextmanager
def _claim_stdin() -> Iterator[int]:
    """A private copy of fd 0, with fd 0 itself on the null device while serving.

    Component code that reads stdin (or a child process inheriting it) would otherwise steal
    protocol bytes; the SDK does the same for the stdin it reads itself. The copy stays open: the
    reading thread may still block on it, and a closed descriptor could be reused under it.
    """
    private = os.dup(0)
    saved = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        yield private
    finally:
        os.dup2(saved, 0)
        os.close(saved)


@asynccontextmanager
async def checked_stdio() -> AsyncIterator[StdioChannel]:
    """`stdio_server()` whose every incoming line is answered (see the module docs)."""
    with _claim_stdin() as fd:
        lines = _StdinLines(fd)
        stdin = CheckedStdin(lines)
        async with stdio_server(stdin=stdin) as (read, write):  # type: ignore[arg-type]
            stdin.replies = write
            lines.start()
            yield StdioChannel(read, _TrackedWrite(write, stdin.pending), stdin, lines)
