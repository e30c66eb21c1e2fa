"""The counter on a bare official-SDK `MCPServer`, state in a module global dict.

`--racy` makes the tool await between its read and its write (as any tool that calls something
between the two does): concurrent calls on one key then overwrite each other's updates, because
nothing serializes them. Without it the read-modify-write has no await and is atomic on the loop.
"""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import MCPServer

from benchmarks.servers._uvicorn import port_arg, serve

COUNTS: dict[str, int] = {}
RACY = "--racy" in sys.argv

mcp = MCPServer("bare")


@mcp.tool()
async def increment(key: str) -> int:
    """Add one to the counter `key` and return the new value."""
    if RACY:
        value = COUNTS.get(key, 0)
        await asyncio.sleep(0)
        COUNTS[key] = value + 1
    else:
        COUNTS[key] = COUNTS.get(key, 0) + 1
    return COUNTS[key]


@mcp.tool()
async def get(key: str) -> int:
    """The counter `key`."""
    return COUNTS.get(key, 0)


if __name__ == "__main__":
    serve(mcp.streamable_http_app(), port_arg())
