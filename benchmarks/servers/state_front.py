"""A stateless MCP tool server that externalizes its state: every mutation is an MCP call to
the state server (`--state-url`). One client session to the state server is shared by all
requests, as a connection pool would be.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer

from benchmarks.servers._uvicorn import port_arg, serve

_STATE_URL = sys.argv[sys.argv.index("--state-url") + 1]
_session: asyncio.Future[ClientSession] | None = None
_owner: asyncio.Task[None] | None = None


async def _own_session(ready: asyncio.Future[ClientSession]) -> None:
    """Hold the state-server session open in one task (its contexts must exit where they began)."""
    try:
        async with streamable_http_client(_STATE_URL) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            ready.set_result(session)
            await asyncio.Event().wait()
    except BaseException as exc:
        if not ready.done():
            ready.set_exception(exc)
        raise


async def _state() -> ClientSession:
    global _session, _owner
    if _session is None:
        _session = asyncio.get_running_loop().create_future()
        _owner = asyncio.create_task(_own_session(_session))
    return await _session


def _value(result: Any) -> int:
    if result.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in result.content))
    return int(result.structured_content["result"])


mcp = MCPServer("front")


@mcp.tool()
async def increment(key: str) -> int:
    """Add one to the counter `key` (in the state service) and return the new value."""
    return _value(await (await _state()).call_tool("incr", {"key": key}))


@mcp.tool()
async def get(key: str) -> int:
    """The counter `key`, read from the state service."""
    return _value(await (await _state()).call_tool("get", {"key": key}))


if __name__ == "__main__":
    serve(mcp.streamable_http_app(), port_arg())
