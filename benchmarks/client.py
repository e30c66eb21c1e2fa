"""The load generator: official-SDK MCP clients over streamable HTTP, in this process.

On a 2-core machine the client and the server under test share the CPU, and the Python client
costs about as much per call as the server; absolute figures are therefore pessimistic for
every design alike, and the comparisons (same client, interleaved) are what to read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client


@contextlib.asynccontextmanager
async def session(url: str, mode: str = "legacy") -> AsyncIterator[ClientSession]:
    """An MCP session: `legacy` runs `initialize` (2025-11-25), `modern` runs `discover` (2026-07-28)."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        if mode == "legacy":
            await s.initialize()
        else:
            await s.discover()
        yield s


def value_of(result: Any) -> int:
    if result.is_error:
        raise RuntimeError(" ".join(getattr(c, "text", "") for c in result.content))
    content = result.structured_content
    if isinstance(content, dict) and "result" in content:
        return int(content["result"])
    return int(result.content[0].text)


RETRIES = 3
"""Attempts per benchmark call when the answer says to retry."""


async def call(s: ClientSession, tool: str, arguments: dict[str, Any]) -> int:
    """One call's value; an error that says to retry (a replica briefly unsure of its lease on a
    loaded machine, as docs/scaling.md describes) is retried, as a client of replicas does."""
    for _ in range(RETRIES):
        result = await s.call_tool(tool, arguments)
        if not (result.is_error and "retry" in " ".join(getattr(c, "text", "") for c in result.content)):
            break
    return value_of(result)


async def sequential(s: ClientSession, tool: str, arguments: dict[str, Any], n: int) -> list[float]:
    """Latency of `n` calls made one after another on one session (after a short warm-up)."""
    for _ in range(min(20, n)):
        await call(s, tool, arguments)
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        await call(s, tool, arguments)
        out.append(clock() - t0)
    return out


@dataclass
class LoadResult:
    """What a concurrent run saw: latencies, wall time, and which calls were acknowledged."""

    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    acked: Counter[str] = field(default_factory=Counter)
    errors: int = 0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


async def concurrent(
    url: str,
    tool: str,
    *,
    clients: int,
    seconds: float,
    key_of: Callable[[int], str],
    mode: str = "legacy",
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    drain: float = 30.0,
) -> LoadResult:
    """`clients` sessions, each calling `tool` back to back for `seconds` (or until `stop`).

    `started` is set when the sessions are open and the clients start calling. Calls still in
    flight `drain` seconds after the stop are cancelled and not counted (a killed server's
    pending calls never answer).

    Sessions are opened before the clock starts. A call counts as acknowledged only when its
    reply arrived and was not an error; errors (a killed server) end that client's loop.
    """
    result = LoadResult()
    stop = stop or asyncio.Event()
    go = asyncio.Event()

    async def client(i: int, opened: asyncio.Future[None]) -> None:
        key = key_of(i)
        clock = time.perf_counter
        try:
            async with session(url, mode) as s:
                opened.set_result(None)
                await go.wait()
                while not stop.is_set():
                    t0 = clock()
                    try:
                        await call(s, tool, {"key": key})
                    except Exception:
                        result.errors += 1
                        return
                    result.latencies.append(clock() - t0)
                    result.acked[key] += 1
        except Exception:
            if not opened.done():
                opened.set_exception(RuntimeError(f"client {i} could not open a session to {url}"))
            result.errors += 1

    loop = asyncio.get_running_loop()
    opened = [loop.create_future() for _ in range(clients)]
    tasks = [asyncio.create_task(client(i, f)) for i, f in enumerate(opened)]
    try:
        await asyncio.gather(*opened)
        t0 = time.perf_counter()
        go.set()
        if started is not None:
            started.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        stop.set()
        await asyncio.wait(tasks, timeout=drain)
        result.elapsed = time.perf_counter() - t0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return result
