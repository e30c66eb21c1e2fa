"""Calls from a component to tools on other MCP servers, over pooled streamable HTTP sessions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx2
from mcp import ClientSession
from mcp.client.session import LoggingFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, LoggingLevel, RequestParamsMeta

from statefulmcp._errors import RemoteCallError

__all__ = ["Remote", "RemoteCallError", "RemotePool"]

log = logging.getLogger("statefulmcp.remote")

DEFAULT_TIMEOUT = 30.0

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Remote:
    """A tool on another MCP server, for `@component(uses={"alias": Remote(url, tool)})`.

    The caller owns the timeout: a call that takes longer than `timeout` seconds fails with a
    clear error, whatever the remote server's own limits. `token_env` names an environment
    variable holding a bearer token for a server that requires one (the token itself never
    goes in source code).
    """

    url: str
    tool: str
    timeout: float = DEFAULT_TIMEOUT
    token_env: str | None = None


def result_value(result: CallToolResult) -> Any:
    """What the tool returned: structured content (`{"result": x}` unwrapped), else its text."""
    content = result.structured_content
    if isinstance(content, dict) and set(content) == {"result"}:
        return content["result"]
    if content is not None:
        return content
    return "\n".join(getattr(block, "text", "") for block in result.content)


def _explain(exc: BaseException, remote: Remote, refused: int | None) -> str:
    """The cause a caller can act on: a refused token (the SDK reports only "an error
    response"), else the innermost error of the SDK's task groups."""
    if refused is not None:
        if remote.token_env is None:
            return (
                f"the server requires authentication ({refused}); give Remote(..., token_env='VAR') "
                "a variable holding a token"
            )
        return f"the server refused the token in ${remote.token_env} ({refused})"
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS client context of this process, verifying as httpx2 does by default.

    httpx2 builds a context per client, loading the CA bundle each time (about 25 ms of CPU), and
    a replica opens a client per peer it forwards to; a context is safe to share between them.
    """
    return httpx2.create_ssl_context()


class CallNotSent(Exception):
    """No session to the server could be opened: the call cannot have run there."""

    def __init__(self, cause: BaseException, refused: int | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.refused = refused


class CallFailed(Exception):
    """The call was sent and failed without an answer: it may or may not have run."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _never_connected(exc: BaseException) -> bool:
    """Whether `exc` (or an error it wraps) is a refused connection: the request never left."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, httpx2.ConnectError | ConnectionRefusedError):
            return True
        if isinstance(error, BaseExceptionGroup):
            stack.extend(error.exceptions)
        for linked in (error.__cause__, error.__context__):
            if linked is not None:
                stack.append(linked)
    return False


class _Connection:
    """One open MCP session to a server, owned by a task (SDK contexts must exit where entered)."""

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        modern: bool = False,
        log_level: LoggingLevel | None = None,
        logging_callback: LoggingFnT | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.modern = modern
        self.log_level: LoggingLevel | None = log_level
        self.logging_callback = logging_callback
        self.refused: int | None = None  # 401 or 403, if the server answered one
        self.session: ClientSession | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._done = asyncio.Event()
        self.task = asyncio.create_task(self._hold(), name=f"statefulmcp-remote {url}")

    async def _hold(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                headers = {"Authorization": f"Bearer {self.token}"} if self.token is not None else {}
                client = await stack.enter_async_context(
                    httpx2.AsyncClient(
                        headers=headers,
                        timeout=httpx2.Timeout(30, read=300),
                        verify=tls_context(),
                        event_hooks={"response": [self._note_refusal]},
                    )
                )
                read, write = await stack.enter_async_context(
                    streamable_http_client(self.url, http_client=client)
                )
                session = await stack.enter_async_context(
                    ClientSession(
                        read, write, logging_callback=self.logging_callback, log_level=self.log_level
                    )
                )
                if self.modern:
                    await session.discover()
                else:
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

    async def _note_refusal(self, response: httpx2.Response) -> None:
        if response.status_code in (401, 403):
            self.refused = response.status_code

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

    def __init__(
        self,
        *,
        modern: bool = False,
        log_level: LoggingLevel | None = None,
        logging_callback: LoggingFnT | None = None,
    ) -> None:
        """`modern=True` speaks the sessionless 2026-07-28 protocol (`server/discover`): cheaper per
        call, for servers known to serve it (replicas forwarding to each other). `log_level` asks
        every request's server for the log messages from that level up (2026-07-28), and
        `logging_callback` hears them."""
        self.modern = modern
        self.log_level: LoggingLevel | None = log_level
        self.logging_callback = logging_callback
        self._connections: dict[tuple[str, str | None], _Connection] = {}
        self._closing: set[asyncio.Task[None]] = set()

    async def call(self, remote: Remote, arguments: dict[str, Any]) -> Any:
        where = f"remote tool {remote.tool!r} at {remote.url}"
        token = None
        if remote.token_env is not None:
            token = os.environ.get(remote.token_env)
            if not token:
                raise RemoteCallError(
                    f"{where}: Remote(..., token_env={remote.token_env!r}) but ${remote.token_env} is not set"
                )
        try:
            result = await self.call_tool(
                remote.url, remote.tool, arguments, token=token, timeout=remote.timeout
            )
        except CallNotSent as exc:
            raise RemoteCallError(
                f"{where} failed: {_explain(exc.cause, remote, exc.refused)}"
            ) from exc.cause
        except CallFailed as exc:
            raise RemoteCallError(f"{where} failed: {_explain(exc.cause, remote, None)}") from exc.cause
        except TimeoutError:
            raise RemoteCallError(
                f"{where} did not answer within {remote.timeout:g} s (the timeout of Remote(..., timeout=...))"
            ) from None
        if result.is_error:
            text = " ".join(getattr(block, "text", "") for block in result.content)
            raise RemoteCallError(f"{where} returned an error: {text}")
        return result_value(result)

    async def call_tool(
        self,
        url: str,
        tool: str,
        arguments: dict[str, Any],
        *,
        token: str | None = None,
        timeout: float,
        meta: dict[str, Any] | None = None,
    ) -> CallToolResult:
        """The server's raw result. Raises `TimeoutError`, `CallNotSent` when the request cannot have
        reached the server (no session could be opened), or `CallFailed` when it may have."""
        return await self.request(
            url,
            lambda session: session.call_tool(tool, arguments, meta=cast(RequestParamsMeta | None, meta)),
            token=token,
            timeout=timeout,
        )

    async def request(
        self,
        url: str,
        send: Callable[[ClientSession], Awaitable[T]],
        *,
        token: str | None = None,
        timeout: float,
        answers: frozenset[int] = frozenset(),
    ) -> T:
        """What `send` gets from the server over this pool's session to `url`. Raises as
        `call_tool` does; an `MCPError` whose code is in `answers` is the server's own answer (it
        comes back as it is, and the session stays)."""
        target = (url, token)
        connection: _Connection | None = None
        async with asyncio.timeout(timeout):
            connection = self._connections.get(target)
            if connection is None or connection.task.done():
                connection = self._connections[target] = _Connection(
                    url,
                    token,
                    modern=self.modern,
                    log_level=self.log_level,
                    logging_callback=self.logging_callback,
                )
            try:
                session = await connection.ready()
            except Exception as exc:
                self._forget(target)
                raise CallNotSent(exc, connection.refused) from exc
            try:
                return await send(session)
            except Exception as exc:
                if isinstance(exc, MCPError) and exc.error.code in answers:
                    raise
                self._forget(target)
                if _never_connected(exc):
                    raise CallNotSent(exc, None) from exc
                raise CallFailed(exc) from exc

    def _forget(self, target: tuple[str, str | None]) -> None:
        connection = self._connections.pop(target, None)
        if connection is not None:
            connection.task.cancel()
            self._closing.add(connection.task)
            connection.task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every connection and await every task the pool started."""
        connections, self._connections = list(self._connections.values()), {}
        await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)
        await asyncio.gather(*self._closing, *(c.task for c in connections), return_exceptions=True)
