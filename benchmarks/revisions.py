"""Before/after figures from one run: this checkout against another git revision, side by side.

    .venv/bin/python -m benchmarks.revisions 3eeba84 [--rounds 5] [--seconds 3]

The other revision is checked out into a temporary git worktree. Each round runs one probe
process per side, alternating A B A B, so drift of the machine hits both alike; each side
imports `statefulmcp` from its own `src/` and loads its own benchmark components. The probe uses
only the API every revision has (`Host(state=...)`, `load(path)`, `call(name, args)`). Reported:
medians over rounds of each figure, and the after/before ratio per round, medianed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import asyncio, json, sqlite3, statistics, sys, tempfile, time
from pathlib import Path

import uvloop
from statefulmcp import Host

components, seconds = Path(sys.argv[1]), float(sys.argv[2])
clock = time.perf_counter


async def sequential(call, n):
    for _ in range(100):
        await call()
    out = []
    for _ in range(n):
        t0 = clock()
        await call()
        out.append(clock() - t0)
    return statistics.median(out) * 1e6


async def rate(call, callers):
    done, stop = 0, False

    async def caller(i):
        nonlocal done
        while not stop:
            await call(i)
            done += 1

    tasks = [asyncio.ensure_future(caller(i)) for i in range(callers)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    return done / seconds


def raw_commit(path, n):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    out = []
    for i in range(n):
        t0 = clock()
        db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{i % 64}", str(i)))
        db.commit()
        out.append(clock() - t0)
    db.close()
    return statistics.median(out[n // 2 :]) * 1e6


async def main():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with Host() as host:
            await host.load(components / "counter.py")
            keys = [{"key": f"c{i}"} for i in range(64)]
            out["bridged turn p50 (us)"] = await sequential(lambda: host.call("counter_increment", keys[0]), 5000)
            out["bridged turns/s, 64 callers"] = await rate(lambda i: host.call("counter_increment", keys[i]), 64)
        async with Host(state=f"sqlite:///{tmp}/state.db") as host:
            await host.load(components / "durable_counter.py")
            tool = "durable_counter_increment"
            keys = [{"key": f"c{i}"} for i in range(64)]
            out["durable turns/s, 1 caller"] = await rate(lambda i: host.call(tool, keys[i]), 1)
            out["durable turn p50 (us)"] = await sequential(lambda: host.call(tool, {"key": "solo"}), 2000)
            out["raw SQLite commit p50 (us)"] = raw_commit(f"{tmp}/raw.db", 4000)
            out["durable turns/s, 16 callers"] = await rate(lambda i: host.call(tool, keys[i]), 16)
            out["durable turns/s, 64 callers"] = await rate(lambda i: host.call(tool, keys[i]), 64)
    out["durable/raw p50 ratio"] = out["durable turn p50 (us)"] / out["raw SQLite commit p50 (us)"]
    print(json.dumps(out))


uvloop.run(main())
"""


def _probe(root: Path, seconds: float) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(root / "benchmarks" / "components"), str(seconds)],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the probe failed on {root}:\n{done.stderr}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _table(before: list[dict[str, float]], after: list[dict[str, float]], label: str) -> str:
    rows = [f"{'figure':<32} {label:>12} {'this checkout':>14} {'after/before':>13}"]
    for name in before[0]:
        b = statistics.median(r[name] for r in before)
        a = statistics.median(r[name] for r in after)
        ratio = statistics.median(x[name] / y[name] for x, y in zip(after, before, strict=True))
        rows.append(f"{name:<32} {b:>12,.1f} {a:>14,.1f} {ratio:>12.3f}x")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.revisions", description=__doc__)
    parser.add_argument("base", help="the git revision to compare this checkout against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each throughput run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rev-") as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True
        )
        try:
            before: list[dict[str, Any]] = []
            after: list[dict[str, Any]] = []
            for r in range(args.rounds):
                print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
                before.append(_probe(base, args.seconds))
                after.append(_probe(ROOT, args.seconds))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    print(_table(before, after, args.base[:12]))


if __name__ == "__main__":
    main()
