"""`python -m benchmarks.servers.store_load URL CALLERS SECONDS PREFIX`: durable turns in-process.

One replica's share of the throughput figure: `Host(state=URL)` with the durable counter,
`CALLERS` concurrent callers on keys of their own for `SECONDS`; prints one JSON line with the
turns done and the time taken. Several of these side by side are several replicas on one store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvloop

from benchmarks import inproc
from statefulmcp import Host

COMPONENT = Path(__file__).parents[1] / "components" / "durable_counter.py"


async def main(url: str, callers: int, seconds: float, prefix: str) -> None:
    async with Host(state=url) as host:
        await host.load(COMPONENT)
        keys = [{"key": f"{prefix}{i}"} for i in range(callers)]
        latencies, elapsed = await inproc.timed_concurrent(
            lambda i: host.call("durable_counter_increment", keys[i]), callers, seconds
        )
    print(json.dumps({"turns": len(latencies), "elapsed": elapsed}), flush=True)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]))
