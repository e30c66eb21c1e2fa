"""Figure 5 (issue 4): 1 kHz background tick lateness, and long-poll wake-up latency.

Lateness is what the host records for each tick (time past its due time on the fixed
schedule), read from `list_components`, on a real `statefulmcp serve` process: once idle and
once while the same process serves 200 tool calls/s over HTTP from this process. Wake-up latency
is in-process: from the write that makes a waiting call's predicate true (timestamped inside that
turn) to the waiting `Host.call` returning in the caller loop.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import client, procs, stats
from statefulmcp import Host, Stateful, background, component, tool

COMPONENTS = Path(__file__).parent / "components"


@component(stateful=True, key="key", durability="memory")
class LongPoll(Stateful):
    """A waiter and a bumper on one instance."""

    def __init__(self) -> None:
        self.value = 0
        self.bumped_at = 0.0

    @tool
    async def wait_for(self, key: str, n: int) -> float:
        await self.wait_until(lambda: self.value >= n, timeout=10)
        return self.bumped_at

    @tool
    async def bump(self, key: str) -> int:
        self.value += 1
        self.bumped_at = time.perf_counter()
        return self.value


@component(stateful=True, durability="turn")
class DurableTick(Stateful):
    """A 1 kHz tick writing a small durable value."""

    @background(every=0.001)
    async def tick(self) -> None:
        self.state["n"] = self.state.get("n", 0) + 1

    @tool
    async def n(self) -> int:
        return int(self.state.get("n", 0))


@component(stateful=True, durability="turn")
class DurableWindow(Stateful):
    """A 1 kHz tick writing a 1,000-price window (about 18 KB of JSON per tick)."""

    @background(every=0.001)
    async def tick(self) -> None:
        window = [*self.state.get("window", []), 100.0 + len(self.state.get("window", [])) % 7][-1000:]
        self.state["window"] = window

    @tool
    async def n(self) -> int:
        return len(self.state.get("window", []))


async def _durable_ticks(work: Path, cls: type, sync: str, seconds: float) -> dict[str, Any]:
    """Ticks per second of a durable 1 kHz tick, in-process on a real SQLite file."""
    name = "durable_tick" if cls is DurableTick else "durable_window"
    async with Host(state=work / f"{name}-{sync}.db", sync=sync) as host:  # type: ignore[arg-type]
        await host.load(cls)
        await host.call(f"{name}_n")  # activates the instance, which starts the tick

        def ticks() -> dict[str, Any]:
            found: dict[str, Any] = host.list()[0].details["background"]["tick"]
            return found

        before, t0 = ticks(), time.perf_counter()
        await asyncio.sleep(seconds)
        after, elapsed = ticks(), time.perf_counter() - t0
    return {
        "ticks_per_s": (after["ticks"] - before["ticks"]) / elapsed,
        "skipped": after["skipped"] - before["skipped"],
        "lateness_us": after["lateness_us"],
    }


async def _tick_stats(url: str) -> dict[str, Any] | None:
    async with client.session(url) as s:
        result = await s.call_tool("list_components", {})
    for info in (result.structured_content or {}).get("components", []):
        if info["name"] == "ticking":
            loop = (info.get("details") or {}).get("background", {}).get("tick")
            return dict(loop) if loop else None
    return None


async def _lateness(work: Path, seconds: float, rate: float) -> dict[str, Any] | None:
    """Serve the ticking component, activate it, optionally call at `rate`/s, read its stats."""
    with procs.running(
        "ticking", procs.statefulmcp_argv(COMPONENTS / "ticking.py", COMPONENTS / "counter.py"), work
    ) as server:
        async with client.session(server.url) as s:
            await client.call(s, "ticking_start", {"key": "t"})
            calls = 0
            t0 = time.perf_counter()
            deadline = t0 + seconds
            while (now := time.perf_counter()) < deadline:
                if rate:
                    await client.call(s, "counter_increment", {"key": "l"})
                    calls += 1
                    await asyncio.sleep(max(0.0, t0 + calls / rate - time.perf_counter()))
                else:
                    await asyncio.sleep(min(0.5, deadline - now))
            achieved = calls / (time.perf_counter() - t0)
        found = await _tick_stats(server.url)
    if found is None:
        return None
    return {**found, "seconds": seconds, "calls_per_s": achieved}


async def _wakeups(n: int) -> list[float]:
    async with Host() as host:
        await host.load(LongPoll)
        out = []
        for i in range(1, n + 1):

            async def waiter(i: int = i) -> tuple[float, float]:
                bumped = await host.call("long_poll_wait_for", {"key": "w", "n": i})
                return bumped, time.perf_counter()

            task = asyncio.create_task(waiter())
            await asyncio.sleep(0.002)  # let the waiter park before the bump
            await host.call("long_poll_bump", {"key": "w"})
            bumped, done = await task
            out.append(done - bumped)
        return out


async def run(quick: bool) -> dict[str, Any]:
    seconds, wakes = (3.0, 200) if quick else (10.0, 2000)
    out: dict[str, Any] = {"seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="bench-bg-") as tmp:
        idle = await _lateness(Path(tmp), seconds, 0)
        loaded = await _lateness(Path(tmp), seconds, 200) if idle is not None else None
    if idle is None or loaded is None:
        out["lateness"] = {"available": False, "reason": "no background tick statistics in list_components"}
    else:
        out["lateness"] = {"available": True, "idle": idle, "200 calls/s": loaded}
    durable: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ticks-") as tmp:
        for cls, label in ((DurableTick, "small value"), (DurableWindow, "1,000-price window")):
            for sync in ("os", "process"):
                durable[f"{label}, durability {sync}"] = await _durable_ticks(
                    Path(tmp), cls, sync, seconds / 2
                )
    out["durable_ticks"] = durable
    found = await _wakeups(wakes)
    out["wakeup"] = {"available": True, **stats.summary(found)}
    samples: dict[str, dict[str, list[float]]] = {"wakeup": {"long-poll wake-up": found}}
    targets = []
    if out["lateness"]["available"]:
        for label, limit in (("idle", 1000), ("200 calls/s", 2000)):
            p99 = out["lateness"][label]["lateness_us"]["p99"]
            targets.append(
                {
                    "target": f"1 kHz tick lateness p99 <= {limit // 1000} ms ({label})",
                    "value": f"{p99} us",
                    "met": p99 is not None and p99 <= limit,
                }
            )
    small = durable["small value, durability os"]["ticks_per_s"]
    targets.append(
        {
            "target": "durable 1 kHz tick (small value, durability os) >= 990 ticks/s",
            "value": f"{small:.0f} ticks/s",
            "met": small >= 990,
        }
    )
    if out["wakeup"]["available"]:
        p50 = out["wakeup"]["p50_us"]
        targets.append(
            {"target": "long-poll wake-up p50 <= 200 us", "value": f"{p50:.0f} us", "met": p50 <= 200}
        )
    out["targets"] = targets
    out["_samples"] = samples
    return out
