"""The "state service": an official-SDK MCP server that keeps counters in SQLite.

WAL and `synchronous=FULL`, like statefulmcp's `durability="turn"`: an increment is on disk
before it is acknowledged. The tool is sync so the SDK runs it on a worker thread; a lock keeps
one writer on the connection.
"""

from __future__ import annotations

import sqlite3
import sys
import threading

from mcp.server.mcpserver import MCPServer

from benchmarks.servers._uvicorn import port_arg, serve

_DB = sys.argv[sys.argv.index("--db") + 1] if "--db" in sys.argv else "state.db"
_conn = sqlite3.connect(_DB, isolation_level=None, check_same_thread=False)
_conn.execute("PRAGMA journal_mode=WAL")
_conn.execute("PRAGMA synchronous=FULL")
_conn.execute("CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
_lock = threading.Lock()

mcp = MCPServer("state")


@mcp.tool()
def incr(key: str) -> int:
    """Atomically add one to `key`, commit, and return the new value."""
    with _lock:
        row = _conn.execute(
            "INSERT INTO counters VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1 "
            "RETURNING value",
            (key,),
        ).fetchone()
    return int(row[0])


@mcp.tool()
def get(key: str) -> int:
    """The committed value of `key`."""
    with _lock:
        row = _conn.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row else 0


if __name__ == "__main__":
    serve(mcp.streamable_http_app(), port_arg())
