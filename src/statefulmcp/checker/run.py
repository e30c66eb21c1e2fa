"""One run of the checker: a fresh database, the replicas, the load, the faults, the verdict."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statefulmcp.checker.database import RunDatabase, upstream_of
from statefulmcp.checker.faults import FAULTS
from statefulmcp.checker.history import History, Kind
from statefulmcp.checker.load import Load
from statefulmcp.checker.proxy import Proxy
from statefulmcp.checker.rig import Restartable, Rig
from statefulmcp.checker.target import Target
from statefulmcp.checker.verdict import AuditRow, Verdict, judge

log = logging.getLogger("statefulmcp.checker")


@dataclass(frozen=True)
class Settings:
    """How one run goes. `repeat`: how many times the fault strikes in the run (a rolling
    restart counts once for all the replicas it restarts)."""

    fault: str = "kill"
    repeat: int = 3
    replicas: int = 3
    lease: float = 1.0
    clients: int = 6
    counters: int = 8
    registers: int = 4
    seed: int | None = None
    call_timeout: float | None = None
    """Per call; default max(5 s, 5 leases). A call to a stopped replica waits this long."""
    max_calls: int = 100_000
    max_seconds: float = 600.0
    serve_args: tuple[str, ...] = ()
    """Extra arguments for every `statefulmcp serve` (`--drain-timeout 5`, ...)."""
    keep_database: bool = False


@dataclass
class Report:
    """A run's outcome: the verdict, and what is needed to look closer or replay it."""

    fault: str
    seed: int
    verdict: Verdict
    directory: Path
    database: str
    kept: bool
    seconds: float

    def text(self) -> str:
        lines = [
            f"fault {self.fault}, seed {self.seed}, {self.seconds:.1f} s: {self.verdict.summary()}",
            *(f"  VIOLATION {v}" for v in self.verdict.violations[:50]),
        ]
        if len(self.verdict.violations) > 50:
            lines.append(f"  ... and {len(self.verdict.violations) - 50} more")
        if self.kept:
            lines.append(f"  database {self.database} kept; replica logs in {self.directory}")
        return "\n".join(lines)


async def check(
    state: str,
    directory: Path,
    *,
    target: Target | None = None,
    settings: Settings | None = None,
    server: Restartable | None = None,
) -> Report:
    """Run the checker once against the PostgreSQL server `state` reaches (a role that may
    create databases); replica logs go to `directory`. `server` restarts PostgreSQL (needed
    for the pg-restart fault)."""
    target = target or Target()
    settings = settings or Settings()
    if settings.fault not in FAULTS:
        raise ValueError(f"unknown fault {settings.fault!r}; choose one of {', '.join(FAULTS)}")
    seed = settings.seed if settings.seed is not None else secrets.randbits(32)
    rng = random.Random(seed)
    started = time.monotonic()
    db = await asyncio.to_thread(RunDatabase.create, state)
    proxy = Proxy(upstream_of(db.url)) if settings.fault == "cut" else None
    history = History()
    rig = Rig(target, db, settings.lease, directory, history, settings.serve_args, server, proxy)
    timeout = settings.call_timeout or max(5.0, 5 * settings.lease)
    try:
        await rig.start_replica(via_proxy=proxy is not None)  # the first creates the tables
        await asyncio.gather(*(rig.start_replica() for _ in range(settings.replicas - 1)))
        load = rig.load = Load(
            target,
            rig.urls,
            history,
            rng,
            clients=settings.clients,
            counters=settings.counters,
            registers=settings.registers,
            call_timeout=timeout,
            max_calls=settings.max_calls,
            max_seconds=settings.max_seconds,
            slow=max(0.5, settings.lease / 2),
        )
        await load.new_phase()
        clients = asyncio.create_task(load.run())
        try:
            for _ in range(settings.repeat):
                await FAULTS[settings.fault](rig, rng)
            await rig.acknowledgements(20)  # normal service after the last fault
        finally:
            load.stop()
            await asyncio.wait({clients}, timeout=timeout + 15)
        await _final_reads(rig, load)
    finally:
        if rig.load is not None:
            await rig.load.close()
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in rig.replicas))
        if proxy is not None:
            proxy.close()
    try:
        claims, commits, final = await asyncio.to_thread(_audit, db, target, history)
    finally:
        db.close()
    verdict = judge(history.calls, claims, commits, final, faults=rig.faults)
    if not commits:
        verdict.violations.append(
            f"no audited commits of component {target.name!r}: is that its name? (the replicas run "
            "with --audit-commits)"
        )
    kept = settings.keep_database or not verdict.ok
    if not kept:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(db.drop)
    return Report(settings.fault, seed, verdict, directory, db.name, kept, time.monotonic() - started)


async def _final_reads(rig: Rig, load: Load) -> None:
    """Read every key once more through the cluster (checked like any read), after the load."""
    counters = {c.key for c in rig.history.calls if c.kind in ("incr", "count")}
    registers = {c.key for c in rig.history.calls if c.kind in ("put", "read")}
    for key in sorted(counters | registers):
        kind: Kind = "count" if key in counters else "read"
        urls = rig.urls()
        for attempt in range(3 * len(urls)):
            record = await load.call(kind, key, None, urls[attempt % len(urls)])
            if record.acknowledged:
                break


def _audit(
    db: RunDatabase, target: Target, history: History
) -> tuple[list[AuditRow], list[AuditRow], dict[str, Any]]:
    """The claims, the commits and the final values of the component, once every replica stopped."""
    audit = [
        [
            AuditRow(int(i), str(k), str(r), int(e), at)
            for i, k, r, e, at in db.rows(
                f"SELECT id, key, replica, epoch, at FROM {table} WHERE component = %s", target.name
            )
        ]
        for table in ("statefulmcp_claims", "statefulmcp_commits")
    ]
    final: dict[str, Any] = {}
    for kinds, name in ((("incr", "count"), target.counter_state), (("put", "read"), target.register_state)):
        keys = {c.key for c in history.calls if c.kind in kinds}
        if name is None:  # the last acknowledged final read stands for the final value
            for call in history.calls:
                if call.key in keys and call.acknowledged and call.kind in ("count", "read"):
                    final[call.key] = call.value
            continue
        stored = dict(
            db.rows(
                "SELECT key, value FROM statefulmcp_state WHERE component = %s AND name = %s",
                target.name,
                name,
            )
        )
        for key in keys:
            final[key] = json.loads(stored[key]) if key in stored else None
    return audit[0], audit[1], final
