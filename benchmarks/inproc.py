"""Helpers for the in-process figures: timing many `Host.call`s from one caller loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed_sequential(fn: Callable[[], Awaitable[Any]], n: int, warmup: int = 200) -> list[float]:
    """Latency of `n` awaits of `fn()` one after another, in seconds."""
    for _ in range(warmup):
        await fn()
    clock = time.perf_counter
    out = []
    for _ in range(n):
        t0 = clock()
        await fn()
        out.append(clock() - t0)
    return out


async def timed_concurrent(
    fn: Callable[[int], Awaitable[Any]], callers: int, seconds: float
) -> tuple[list[float], float]:
    """`callers` tasks calling `fn(i)` back to back for `seconds`; (latencies, elapsed)."""
    latencies: list[float] = []
    stop = False
    clock = time.perf_counter

    async def caller(i: int) -> None:
        while not stop:
            t0 = clock()
            await fn(i)
            latencies.append(clock() - t0)

    for i in range(callers):  # warm every caller's instance up before the clock starts
        await fn(i)
    t0 = clock()
    tasks = [asyncio.create_task(caller(i)) for i in range(callers)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    return latencies, clock() - t0
