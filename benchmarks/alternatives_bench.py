"""Figure 3 (issue 6): statefulmcp against what a user would build instead, over HTTP.

The designs, all serving `increment(key) -> int` over streamable HTTP:

- state service: a stateless MCP tool server that makes one MCP call per mutation to a separate
  state server process, which commits to SQLite (WAL, synchronous=FULL);
- module global: a plain SDK server keeping a dict, its tool awaiting between read and write;
- statefulmcp with `durability="memory"` and with `durability="turn"`.

Besides speed: the counters are read back after the concurrent runs (lost updates), and every
design is killed with SIGKILL in the middle of a concurrent run and restarted, to count how many
acknowledged increments it kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import client, procs
from benchmarks.compare import Design, concurrent, sequential

COMPONENTS = Path(__file__).parent / "components"
SERVICE = "state service (HTTP + SQLite)"
GLOBAL = "module global (await inside)"
MEMORY = "statefulmcp durability=memory"
TURN = "statefulmcp durability=turn"
LABELS = (SERVICE, GLOBAL, MEMORY, TURN)


def durable_state_served() -> bool:
    return procs.cli_supports("--state")


@contextlib.contextmanager
def deployment(label: str, work: Path) -> Iterator[tuple[Design, list[procs.Server]]]:
    """Start one design's processes (state kept under `work`, so a restart finds it); stop them all."""
    servers: list[procs.Server] = []
    try:
        if label == SERVICE:
            state = procs.start(
                "state-server", ["-m", "benchmarks.servers.state_server", "--db", "state.db"], work
            )
            servers.append(state)
            front = procs.start(
                "state-front", ["-m", "benchmarks.servers.state_front", "--state-url", state.url], work
            )
            servers.append(front)
            design = Design(label, front.url, "increment")
        elif label == GLOBAL:
            servers.append(procs.start("global", ["-m", "benchmarks.servers.bare_sdk", "--racy"], work))
            design = Design(label, servers[0].url, "increment")
        elif label == MEMORY:
            servers.append(procs.start("sm-memory", procs.statefulmcp_argv(COMPONENTS / "counter.py"), work))
            design = Design(label, servers[0].url, "counter_increment")
        else:
            extra = ["--state", f"sqlite:///{work / 'sm-state.db'}"] if durable_state_served() else []
            argv = procs.statefulmcp_argv(COMPONENTS / "durable_counter.py", extra=extra)
            servers.append(procs.start("sm-turn", argv, work))
            design = Design(label, servers[0].url, "durable_counter_increment")
        yield design, servers
    finally:
        for server in reversed(servers):
            server.stop()


async def _kill_test(label: str, work: Path, clients: int, seconds: float) -> dict[str, Any]:
    """Load one design, SIGKILL every process of it mid-run, restart, read the counters back."""
    keys = [f"kill-k{i}" for i in range(4)]
    with deployment(label, work) as (design, servers):
        started, stop = asyncio.Event(), asyncio.Event()
        load = asyncio.create_task(
            client.concurrent(
                design.url,
                design.tool,
                clients=clients,
                seconds=seconds * 10,
                key_of=lambda i: keys[i % 4],
                started=started,
                stop=stop,
                drain=1.0,
            )
        )
        await started.wait()
        await asyncio.sleep(seconds)
        for server in servers:
            server.stop(signal.SIGKILL)
        stop.set()
        result = await load
    with deployment(label, work) as (design, _):
        async with client.session(design.url) as s:
            after = {k: await client.call(s, design.get_tool, {"key": k}) for k in keys}
    acked = sum(result.acked.values())
    kept = sum(min(after[k], result.acked[k]) for k in keys)
    return {
        "acked": acked,
        "after_restart": sum(after.values()),
        "kept": kept,
        "kept_fraction": kept / acked if acked else None,
    }


async def run(quick: bool) -> dict[str, Any]:
    rounds, calls, seconds, kill_after = (2, 100, 1.0, 1.0) if quick else (5, 300, 4.0, 2.0)
    out: dict[str, Any] = {
        "rounds": rounds,
        "calls_per_block": calls,
        "concurrent_seconds": seconds,
        "durable_state_served": durable_state_served(),
        "mode": "legacy",
    }
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-alt-") as tmp:
        work = Path(tmp)
        with contextlib.ExitStack() as stack:
            designs = [
                stack.enter_context(deployment(label, work / f"run-{i}"))[0] for i, label in enumerate(LABELS)
            ]
            seq, samples["alt_sequential"] = await sequential(
                designs, mode="legacy", rounds=rounds, calls=calls, references=(MEMORY, TURN)
            )
            conc, samples["alt_concurrent32"] = await concurrent(
                designs,
                mode="legacy",
                rounds=rounds,
                seconds=seconds,
                clients=32,
                keys=4,
                references=(MEMORY, TURN),
                check=True,
            )
        out["sequential"] = seq
        out["concurrent32"] = conc
        out["kill9"] = {}
        for i, label in enumerate(LABELS):
            try:
                out["kill9"][label] = await _kill_test(label, work / f"kill-{i}", 32, kill_after)
            except Exception as exc:
                out["kill9"][label] = {"error": f"{type(exc).__name__}: {exc}"}
    out["_samples"] = samples
    return out
