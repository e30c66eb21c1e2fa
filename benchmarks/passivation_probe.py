"""One process touching many keys once, for figure 4's memory table: `python -m
benchmarks.passivation_probe --keys N --state DB [--idle S]` prints one JSON line.

Run in a fresh process per side so each RSS is its own (the benchmark process holds far more).
RSS is read from /proc before, right after the keys were touched, and once every instance was
passivated (or at once, without passivation). CPython keeps freed memory in its own arenas, so
RSS after passivation shows what really went back, not what was freed inside the process.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from pathlib import Path

from statefulmcp import Host

COMPONENT = Path(__file__).parent / "components" / "durable_counter.py"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def main(keys: int, state: str, idle: float | None) -> dict[str, float]:
    async with Host(state=state, idle_seconds=idle, max_instances=None) as host:
        await host.load(COMPONENT)
        await host.call("durable_counter_increment", {"key": "warm"})
        gc.collect()
        before = rss_kib()
        t0 = time.perf_counter()
        remaining = iter(range(keys))

        async def caller() -> None:
            for i in remaining:
                await host.call("durable_counter_increment", {"key": f"k{i}"})

        await asyncio.gather(*(caller() for _ in range(64)))
        touched_s = time.perf_counter() - t0
        gc.collect()
        touched = rss_kib()

        def live() -> int:
            return sum(info.instances for info in host.list())

        settle_started = time.perf_counter()
        while idle is not None and live() > 0 and time.perf_counter() - settle_started < 120:
            await asyncio.sleep(0.1)
        gc.collect()
        return {
            "keys": keys,
            "rss_before_kib": before,
            "rss_touched_kib": touched,
            "rss_settled_kib": rss_kib(),
            "live_settled": live(),
            "touch_s": touched_s,
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--idle", type=float)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.keys, args.state, args.idle))))
