"""Background work of one instance: plain loops and periodic ticks, one task group per instance.

A `@background(every=s)` method is a *tick*: each run is a turn, on a drift-free schedule (tick
n is due at start + n * period), so it never interleaves with calls. Its commit is pipelined:
the next tick does not wait for the previous one's fsync, and replies that observed its writes
wait at their own commit point instead, which is how a durable 1 kHz tick keeps 1 kHz.

A plain `@background` method is a *loop* started on activation that does not hold the turn: it
runs between turns, like any coroutine on the engine loop, and its writes to `self.state` are
committed by the next turn of the instance. A loop that raises is logged and restarted with a
capped exponential backoff; a loop that returns (`async for msg in websocket` ends on a clean
close) is logged and restarted the same way, because background work never dies silently.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from statefulmcp.engine import Engine
    from statefulmcp.instances import Instance

log = logging.getLogger("statefulmcp.background")

_MAX_BACKOFF = 30.0


@dataclass(slots=True)
class LoopStats:
    """What `list_components` shows about one background method of one instance."""

    ticks: int = 0
    skipped: int = 0
    failures: int = 0
    ended: int = 0
    last_error: str | None = None
    lateness: list[float] = field(default_factory=list)

    def record_lateness(self, seconds: float) -> None:
        self.lateness.append(seconds)
        if len(self.lateness) > 20_000:
            del self.lateness[:10_000]

    def summary(self) -> dict[str, Any]:
        late = sorted(self.lateness)

        def pick(q: float) -> float | None:
            return round(late[min(len(late) - 1, int(q * len(late)))] * 1e6, 1) if late else None

        return {
            "ticks": self.ticks,
            "skipped": self.skipped,
            "failures": self.failures,
            "ended": self.ended,
            "last_error": self.last_error,
            "lateness_us": {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)},
        }

    def add(self, other: LoopStats) -> None:
        """Fold `other` into this one (the component-wide total)."""
        self.ticks += other.ticks
        self.skipped += other.skipped
        self.failures += other.failures
        self.ended += other.ended
        self.last_error = other.last_error or self.last_error
        self.lateness.extend(other.lateness[-1000:])


class Background:
    """The background tasks of one instance: started on activation, stopped and awaited on drop."""

    def __init__(self, instance: Instance, engine: Engine, methods: list[tuple[str, float | None]]) -> None:
        self.instance = instance
        self.engine = engine
        self.stats = {name: LoopStats() for name, _ in methods}
        self._methods = methods
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        label = self.instance.label
        for name, every in self._methods:
            work = self._loop(name) if every is None else self._ticks(name, every)
            # A fresh context: the task outlives the activating turn and must not count as inside it.
            task = asyncio.create_task(work, name=f"{label}.{name}", context=contextvars.Context())
            self._tasks.append(task)

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel every task; returns them so the owner can await their end."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        return tasks

    async def stop(self) -> None:
        await asyncio.gather(*self.cancel(), return_exceptions=True)

    async def _loop(self, name: str) -> None:
        """A plain loop, restarted with capped exponential backoff if it raises or returns."""
        stats = self.stats[name]
        backoff = 0.1
        while True:
            started = time.monotonic()
            try:
                await self.instance.owner.call_user(getattr(self.instance.obj, name))
                stats.ended += 1
                stats.last_error = "returned (a background loop is restarted when it ends)"
                log.warning(
                    "background loop %s.%s returned; restarting it in %.1f s (a loop runs for the "
                    "instance's whole life)",
                    self.instance.label,
                    name,
                    backoff,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - background work is restarted, never lost
                self._failed(stats, name, exc)
            if time.monotonic() - started > 60:
                backoff = 0.1  # it ran for a good while: a fresh failure starts from a short wait
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def _ticks(self, name: str, period: float) -> None:
        """Ticks on a fixed schedule; ticks more than a period behind are skipped and counted."""
        stats = self.stats[name]
        instance = self.instance
        method = getattr(instance.obj, name)

        async def tick() -> None:
            await instance.owner.call_user(method)

        clock = time.perf_counter
        start = clock()
        n = 1
        backoff = 0.0
        while True:
            due = start + n * period
            if due > clock():
                await self.engine.sleep_until(due)
            late = clock() - due
            if late > period:
                behind = int(late // period)
                stats.skipped += behind
                n += behind
                due = start + n * period
                late = clock() - due
            stats.record_lateness(max(late, 0.0))
            n += 1
            try:
                await instance.turn(tick, pipeline=True)
                stats.ticks += 1
                backoff = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - background work is restarted, never lost
                self._failed(stats, name, exc)
                backoff = min(max(backoff * 2, period, 0.05), _MAX_BACKOFF)
                await asyncio.sleep(backoff)
                start, n = clock(), 1

    def _failed(self, stats: LoopStats, name: str, exc: BaseException) -> None:
        stats.failures += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        log.error(
            "background %s.%s raised; restarting with backoff\n%s",
            self.instance.label,
            name,
            "".join(traceback.format_exception(exc)),
        )
