"""Figure 4 (issue 3): durable turns against the floor, a raw SQLite insert+commit loop.

Both use WAL and `synchronous=FULL` on the same disk in the same run, blocks interleaved A B A B.
Turns run in-process through `Host(state=...)` with 1, 16 and 64 concurrent callers (one key
each). Then: time from process start to `/ready` with many instances' state stored (activation
is lazy, so this should not grow with the store), against the same start with an empty store.
Last, the resident memory of a process that touched as many keys once, with and without
passivation of idle instances.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from benchmarks import inproc, procs, stats
from statefulmcp import Host

COMPONENT = Path(__file__).parent / "components" / "durable_counter.py"
TOOL = "durable_counter_increment"


def available() -> str | None:
    """None when durable state is there to measure, else why not."""
    if "state" not in inspect.signature(Host).parameters:
        return "Host(state=...) does not exist yet"
    if not procs.cli_supports("--state"):
        return "`statefulmcp serve --state` does not exist yet"
    return None


def _raw_sqlite_block(conn: sqlite3.Connection, n: int, start: int) -> list[float]:
    """`n` single-row upserts, each its own committed transaction: the durable-write floor."""
    clock = time.perf_counter
    out = []
    for i in range(start, start + n):
        t0 = clock()
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i % 64}", f'{{"n": {i}}}'))
        conn.commit()
        out.append(clock() - t0)
    return out


def _raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    conn.commit()
    return conn


async def _populate(db: Path, instances: int) -> float:
    """Give `instances` keys durable state through the host; return turns/s it took."""
    async with Host(state=f"sqlite:///{db}") as host:
        await host.load(COMPONENT)
        t0 = time.perf_counter()
        next_key = iter(range(instances))

        async def writer() -> None:
            for i in next_key:
                await host.call(TOOL, {"key": f"p{i}"})

        await asyncio.gather(*(writer() for _ in range(64)))
        return instances / (time.perf_counter() - t0)


def _memory(keys: int, db: Path, idle: float | None) -> dict[str, Any]:
    """RSS of a fresh process touching `keys` keys once (see `benchmarks.passivation_probe`)."""
    argv = [sys.executable, "-m", "benchmarks.passivation_probe", "--keys", str(keys), "--state", str(db)]
    if idle is not None:
        argv += ["--idle", str(idle)]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=procs.ROOT, timeout=600)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _time_to_ready(db: Path, work: Path) -> float:
    port = procs.free_port()
    argv = procs.statefulmcp_argv(COMPONENT, port=port, extra=["--state", f"sqlite:///{db}"])
    t0 = time.monotonic()
    server = procs.spawn("restart", argv, work)
    try:
        return procs.wait_ready(f"http://127.0.0.1:{port}", proc=server.proc) - t0
    finally:
        server.stop()


async def run(quick: bool) -> dict[str, Any]:
    why = available()
    if why is not None:
        return {"available": False, "reason": why}
    rounds, block, seconds, stored, restarts = (
        (2, 150, 1.0, 10_000, 1) if quick else (5, 500, 3.0, 100_000, 3)
    )
    out: dict[str, Any] = {"available": True, "rounds": rounds, "block": block, "concurrent_seconds": seconds}
    samples: dict[str, list[float]] = {"raw SQLite insert+commit": [], "durable turn, 1 caller": []}
    pairs: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-durable-") as tmp:
        work = Path(tmp)
        conn = _raw_connection(work / "raw.db")
        async with Host(state=f"sqlite:///{work / 'state.db'}") as host:
            await host.load(COMPONENT)
            args = {"key": "solo"}
            for r in range(rounds):
                raw = _raw_sqlite_block(conn, block, r * block)  # on this loop, like the caller of a turn
                turns = await inproc.timed_sequential(lambda: host.call(TOOL, args), block, warmup=20)
                samples["raw SQLite insert+commit"] += raw
                samples["durable turn, 1 caller"] += turns
                pairs.append((statistics.median(turns), statistics.median(raw)))
            conc: dict[str, Any] = {}
            for callers in (1, 16, 64):
                keys = [{"key": f"c{callers}-{i}"} for i in range(callers)]

                def call(i: int, keys: list[dict[str, str]] = keys) -> Awaitable[Any]:
                    return host.call(TOOL, keys[i])

                lat, elapsed = await inproc.timed_concurrent(call, callers, seconds)
                conc[str(callers)] = {**stats.summary(lat), "turns_per_s": len(lat) / elapsed}
                samples[f"durable turn, {callers} callers"] = lat
        conn.close()
        out["sequential"] = {
            label: stats.summary(samples[label])
            for label in ("raw SQLite insert+commit", "durable turn, 1 caller")
        }
        out["ratio_turn_to_raw_p50"] = stats.median_ratio(pairs)
        out["concurrent"] = conc
        db = work / "restart.db"
        out["stored_instances"] = stored
        out["populate_turns_per_s"] = await _populate(db, stored)
        empty = work / "empty.db"
        out["ready_s_empty"] = statistics.median([_time_to_ready(empty, work) for _ in range(restarts)])
        out["ready_s_stored"] = statistics.median([_time_to_ready(db, work) for _ in range(restarts)])
        out["restarts"] = restarts
        out["memory"] = {
            "without passivation": _memory(stored, work / "mem-off.db", None),
            "idle_seconds=1": _memory(stored, work / "mem-on.db", 1.0),
        }
    ratio = out["ratio_turn_to_raw_p50"]
    rate64 = conc["64"]["turns_per_s"]
    out["targets"] = [
        {
            "target": "1 caller: durable turn p50 <= 2x raw SQLite commit",
            "value": f"{ratio:.2f}x",
            "met": ratio <= 2,
        },
        {
            "target": ">= 20,000 durable turns/s with 64 callers",
            "value": f"{rate64:,.0f}/s",
            "met": rate64 >= 20_000,
        },
        {
            "target": f"restart to /ready < 1 s with {stored:,} instances stored",
            "value": f"{out['ready_s_stored']:.2f} s (empty store: {out['ready_s_empty']:.2f} s)",
            "met": out["ready_s_stored"] < 1,
        },
    ]
    out["_samples"] = {"durable": samples}
    return out
