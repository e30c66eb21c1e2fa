"""Figure 2 (issue 2): one bridged turn in-process, against a direct call and the state-service hop.

`Host.call` on a stateful instance (memory durability) from a uvloop caller loop: the call
crosses into the engine thread, runs as a turn, and the reply crosses back. Targets: p50 <=
100 us sequential, >= 50,000 turns/s with 64 concurrent callers (one key each).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import client, inproc, procs, stats
from benchmarks.components.counter import Counter
from statefulmcp import Host


async def _nothing() -> None:
    return None


async def run(quick: bool) -> dict[str, Any]:
    n, seconds, hops = (3000, 1.0, 200) if quick else (30000, 5.0, 1000)
    out: dict[str, Any] = {"sequential_calls": n, "concurrent_seconds": seconds}
    samples: dict[str, list[float]] = {}
    async with Host() as host:
        await host.load(Counter)
        args = {"key": "a"}
        samples["Host.call (bridged turn)"] = await inproc.timed_sequential(
            lambda: host.call("counter_increment", args), n
        )
        keys = [{"key": f"c{i}"} for i in range(64)]
        conc, elapsed = await inproc.timed_concurrent(
            lambda i: host.call("counter_increment", keys[i]), 64, seconds
        )
        # The two cross-thread wake-ups alone, with no turn: what the bridge costs before any work.
        samples["engine hop alone (empty coroutine)"] = await inproc.timed_sequential(
            lambda: host.engine.run(_nothing), n
        )
    direct = Counter()
    samples["direct method call"] = await inproc.timed_sequential(lambda: direct.increment("a"), n)
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        argv = ["-m", "benchmarks.servers.state_server", "--db", "state.db"]
        with procs.running("state-server", argv, Path(tmp)) as state:
            async with client.session(state.url) as s:
                samples["state-service hop (MCP call + SQLite commit)"] = await client.sequential(
                    s, "incr", {"key": "a"}, hops
                )
    out["sequential"] = {label: stats.summary(v) for label, v in samples.items()}
    out["concurrent64"] = {**stats.summary(conc), "turns_per_s": len(conc) / elapsed}
    p50 = out["sequential"]["Host.call (bridged turn)"]["p50_us"]
    out["targets"] = [
        {"target": "bridged turn p50 <= 100 us (sequential)", "value": f"{p50:.1f} us", "met": p50 <= 100},
        {
            "target": ">= 50,000 turns/s with 64 callers",
            "value": f"{out['concurrent64']['turns_per_s']:,.0f} turns/s",
            "met": out["concurrent64"]["turns_per_s"] >= 50_000,
        },
    ]
    out["_samples"] = {"bridge_sequential": samples, "bridge_concurrent64": {"Host.call, 64 callers": conc}}
    return out
