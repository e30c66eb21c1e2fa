"""Calls from a component to tools on other MCP servers, over pooled streamable HTTP sessions."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult

from statefulmcp._errors import RemoteCallError

__all__ = ["Remote", "RemoteCallError", "RemotePool"]

log = logging.getLogger("statefulmcp.remote")

DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Remote:
    """A tool on another MCP server, for `@component(uses={"alias": Remote(url, tool)})`.

    The caller owns the timeout: a call that takes longer than `timeout` seconds fails with a
    clear error, whatever the remote server's own limits.
    """

    url: str
    tool: str
    timeout: float = DEFAULT_TIMEOUT


def result_value(result: CallToolResult) -> Any:
    """What the tool returned: structured content (`{"result": x}` unwrapped), else its text."""
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]
    if content is not None:
        return content
    return "\n".join(getattr(block, "text", "") for block in result.content)


class _Connection:
    """One open MCP session to a server, owned by a task (SDK contexts must exit where entered)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session: ClientSession | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self.task = asyncio.create_task(self._hold(), name=f"statefulmcp-remote {url}")

    async def _hold(self) -> None:
        try:
            async with (
                streamable_http_client(self.url) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                self.session = session
                self._ready.set_result(None)
                await self._done.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            if not isinstance(exc, asyncio.CancelledError | Exception):
                raise
        finally:
            self.session = None

    async def ready(self) -> ClientSession:
        await asyncio.shield(self._ready)
        if self.session is None:
            raise RemoteCallError(f"the connection to {self.url} closed")
        return self.session

    async def close(self) -> None:
        self._done.set()
        try:
            await asyncio.wait_for(self.task, 5)
        except Exception:  # noqa: BLE001 - a session that fails to close cleanly is cancelled instead
            self.task.cancel()


class RemotePool:
    """One reused MCP session per server URL, opened on first use and reopened after a failure."""

    def __init__(self) -> None:
        self._connections: dict[str, _Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def call(self, remote: Remote, arguments: dict[str, Any]) -> Any:
        where = f"remote tool {remote.tool!r} at {remote.url}"
        try:
            async with asyncio.timeout(remote.timeout):
                connection = self._connections.get(remote.url)
                if connection is None or connection.task.done():
                    connection = self._connections[remote.url] = _Connection(remote.url)
                session = await connection.ready()
                result = await session.call_tool(remote.tool, arguments)
        except TimeoutError:
            raise RemoteCallError(
                f"{where} did not answer within {remote.timeout:g} s (the timeout of Remote(..., timeout=...))"
            ) from None
        except RemoteCallError:
            raise
        except Exception as exc:
            self._forget(remote.url)
            raise RemoteCallError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
        if result.is_error:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            raise RemoteCallError(f"{where} returned an error: {text}")
        return result_value(result)

    def _forget(self, url: str) -> None:
        connection = self._connections.pop(url, None)
        if connection is not None:
            connection.task.cancel()
            self._closing.add(connection.task)
            connection.task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every connection and await every task the pool started."""
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        await asyncio.gather(*self._closing, *(c.task for c in connections), return_exceptions=True)
