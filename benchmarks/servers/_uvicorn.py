"""Serve an ASGI app the way `statefulmcp serve` does, so only the MCP layer differs."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
import uvloop

from statefulmcp.transport.http import http_protocol


async def _serve(app: Any, port: int) -> None:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=http_protocol(),  # the very protocol `statefulmcp serve` uses
        log_level="warning",
        access_log=False,
        log_config=None,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await serving
        raise SystemExit("the server did not start")
    host, bound = server.servers[0].sockets[0].getsockname()[:2]
    print(f"serving on http://{host}:{bound}/mcp", file=sys.stderr, flush=True)
    await serving


def serve(app: Any, port: int = 0) -> None:
    uvloop.run(_serve(app, port))


def port_arg() -> int:
    return int(sys.argv[sys.argv.index("--port") + 1]) if "--port" in sys.argv else 0
