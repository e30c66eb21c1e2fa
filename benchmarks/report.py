"""Turn the results into tables: plain text for stdout, Markdown for `docs/benchmarks.md`.

Each figure group renders to a list of `Table`s from its result dict; the doc adds the machine,
the command, the targets and the plots around them. A group that failed or whose feature is not
there yet renders as one sentence saying so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def text(self) -> str:
        widths = [
            max(len(h), *(len(r[i]) for r in self.rows)) if self.rows else len(h)
            for i, h in enumerate(self.headers)
        ]
        line = "  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True))
        body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in self.rows]
        return "\n".join([f"== {self.title}", line, "-" * len(line), *body])

    def markdown(self) -> str:
        out = [
            f"**{self.title}**",
            "",
            "| " + " | ".join(self.headers) + " |",
            "|" + "---|" * len(self.headers),
        ]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        if self.note:
            out += ["", self.note]
        return "\n".join(out)


def us(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:,.0f} us" if v >= 100 else f"{v:.1f} us"


def x(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}x"


def rate(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}/s"


def _http(res: dict[str, Any]) -> list[Table]:
    tables = []
    for mode, what in (("legacy", "initialize, 2025-11-25"), ("modern", "discover, 2026-07-28")):
        seq = res[mode]["sequential"]
        t = Table(
            f"HTTP sequential, {mode} clients ({what})",
            ["server", "calls", "p50", "p99", "p50 / bare (per round)"],
        )
        for label, row in seq.items():
            t.rows.append(
                [label, str(row["n"]), us(row["p50_us"]), us(row["p99_us"]), x(row["ratio_p50"]["bare SDK"])]
            )
        tables.append(t)
        conc = res[mode]["concurrent32"]
        t = Table(
            f"HTTP 32 concurrent clients, {mode}",
            ["server", "calls", "calls/s", "p50", "p99", "calls/s / bare"],
        )
        for label, row in conc.items():
            t.rows.append(
                [
                    label,
                    str(row["n"]),
                    rate(row["calls_per_s"]),
                    us(row["p50_us"]),
                    us(row["p99_us"]),
                    x(row["ratio_rate"]["bare SDK"]),
                ]
            )
        tables.append(t)
    return tables


def _bridge(res: dict[str, Any]) -> list[Table]:
    t = Table("In-process, sequential", ["path", "calls", "p50", "p99", "max"])
    for label, row in res["sequential"].items():
        t.rows.append([label, str(row["n"]), us(row["p50_us"]), us(row["p99_us"]), us(row["max_us"])])
    c = res["concurrent64"]
    t2 = Table("In-process, 64 concurrent callers (one key each)", ["path", "turns", "turns/s", "p50", "p99"])
    t2.rows.append(
        ["Host.call (bridged turn)", str(c["n"]), rate(c["turns_per_s"]), us(c["p50_us"]), us(c["p99_us"])]
    )
    return [t, t2]


def _alternatives(res: dict[str, Any]) -> list[Table]:
    mem, turn = "statefulmcp durability=memory", "statefulmcp durability=turn"
    t = Table(
        "Alternatives, sequential (one client)",
        ["design", "calls", "p50", "p99", "p50 / sm memory", "p50 / sm turn"],
    )
    for label, row in res["sequential"].items():
        t.rows.append(
            [
                label,
                str(row["n"]),
                us(row["p50_us"]),
                us(row["p99_us"]),
                x(row["ratio_p50"][mem]),
                x(row["ratio_p50"][turn]),
            ]
        )
    c = Table(
        "Alternatives, 32 concurrent clients on 4 shared keys",
        [
            "design",
            "calls/s",
            "p50",
            "p99",
            "rate / sm memory",
            "rate / sm turn",
            "acknowledged",
            "final counters",
            "lost updates",
        ],
    )
    for label, row in res["concurrent32"].items():
        c.rows.append(
            [
                label,
                rate(row["calls_per_s"]),
                us(row["p50_us"]),
                us(row["p99_us"]),
                x(row["ratio_rate"][mem]),
                x(row["ratio_rate"][turn]),
                f"{row['acked']:,}",
                f"{row['final']:,}",
                f"{row['lost']:,}",
            ]
        )
    k = Table(
        "kill -9 in the middle of a 32-client run, then restart",
        ["design", "acknowledged before kill", "counters after restart", "acknowledged updates kept"],
    )
    for label, row in res["kill9"].items():
        if "error" in row:
            k.rows.append([label, "-", "-", f"error: {row['error']}"])
            continue
        frac = row["kept_fraction"]
        k.rows.append(
            [
                label,
                f"{row['acked']:,}",
                f"{row['after_restart']:,}",
                f"{row['kept']:,} ({frac:.0%})" if frac is not None else "-",
            ]
        )
    if not res.get("durable_state_served"):
        k.note = (
            "`statefulmcp serve --state` was not available: the durability=turn design ran without a store."
        )
    return [t, c, k]


def _durable(res: dict[str, Any]) -> list[Table]:
    if not res.get("available"):
        return [Table("Durable turns", ["status"], [[f"not available: {res.get('reason')}"]])]
    t = Table("Durable writes, one at a time (WAL, synchronous=FULL)", ["path", "writes", "p50", "p99"])
    for label, row in res["sequential"].items():
        t.rows.append([label, str(row["n"]), us(row["p50_us"]), us(row["p99_us"])])
    t.note = f"Durable turn p50 / raw commit p50, per round: {x(res['ratio_turn_to_raw_p50'])}."
    c = Table(
        "Durable turns with concurrent callers (one key each, group commit)",
        ["callers", "turns", "turns/s", "ack p50", "ack p99"],
    )
    for callers, row in res["concurrent"].items():
        c.rows.append(
            [callers, str(row["n"]), rate(row["turns_per_s"]), us(row["p50_us"]), us(row["p99_us"])]
        )
    r = Table("Restart: process start to /ready 200", ["store", "median of runs", "runs"])
    r.rows.append(["empty", f"{res['ready_s_empty']:.3f} s", str(res["restarts"])])
    r.rows.append(
        [
            f"{res['stored_instances']:,} instances stored",
            f"{res['ready_s_stored']:.3f} s",
            str(res["restarts"]),
        ]
    )
    r.note = f"The store was filled through the host at {res['populate_turns_per_s']:,.0f} durable turns/s (64 callers)."
    tables = [t, c, r]
    memory = res.get("memory")
    if memory:
        m = Table(
            "Memory: one process touches every key once (64 callers), with and without passivation",
            [
                "idle instances",
                "keys",
                "RSS growth, all touched",
                "RSS growth, settled",
                "live instances, settled",
            ],
        )
        for label, row in memory.items():
            m.rows.append(
                [
                    label,
                    f"{row['keys']:,}",
                    f"{(row['rss_touched_kib'] - row['rss_before_kib']) / 1024:,.1f} MiB",
                    f"{(row['rss_settled_kib'] - row['rss_before_kib']) / 1024:,.1f} MiB",
                    f"{row['live_settled']:,}",
                ]
            )
        m.note = (
            "RSS from /proc of a fresh process per row (`benchmarks/passivation_probe.py`), after a gc, minus its RSS "
            "before the first key. Settled: once every instance was passivated (or at once, without passivation). "
            "CPython keeps freed memory in its own arenas, so the settled figure is what went back to the OS."
        )
        tables.append(m)
    return tables


def _background(res: dict[str, Any]) -> list[Table]:
    tables = []
    late = res["lateness"]
    if not late.get("available"):
        tables.append(
            Table("1 kHz background tick lateness", ["status"], [[f"not available: {late.get('reason')}"]])
        )
    else:
        t = Table(
            f"1 kHz background tick lateness over {res['seconds']:g} s (recorded by the host)",
            ["condition", "ticks run", "skipped", "failed", "calls/s served", "p50", "p99", "max"],
        )
        errors = []
        for label in ("idle", "200 calls/s"):
            row = late[label]
            lat = row.get("lateness_us", {})
            t.rows.append(
                [
                    label,
                    f"{row.get('ticks', 0):,}",
                    f"{row.get('skipped', 0):,}",
                    f"{row.get('failures', 0):,}",
                    f"{row.get('calls_per_s', 0):.0f}",
                    us(lat.get("p50")),
                    us(lat.get("p99")),
                    us(lat.get("max")),
                ]
            )
            if row.get("last_error"):
                errors.append(f"{label}: {row['last_error']}")
        if errors:
            t.note = "Ticks failed; the host's last recorded error: " + "; ".join(errors)
        tables.append(t)
    durable = res.get("durable_ticks")
    if durable:
        tables.append(
            Table(
                "Durable 1 kHz ticks, in-process on a real SQLite file (each tick's commit pipelined)",
                ["tick writes", "ticks/s", "skipped", "lateness p50", "p99"],
                [
                    [
                        label,
                        f"{row['ticks_per_s']:.0f}",
                        f"{row['skipped']:,}",
                        us(row["lateness_us"].get("p50")),
                        us(row["lateness_us"].get("p99")),
                    ]
                    for label, row in durable.items()
                ],
            )
        )
    wake = res["wakeup"]
    if not wake.get("available"):
        tables.append(Table("Long-poll wake-up", ["status"], [[f"not available: {wake.get('reason')}"]]))
    else:
        tables.append(
            Table(
                "Long-poll wake-up, in-process (write that satisfies the predicate -> waiter's reply)",
                ["waits", "p50", "p99", "max"],
                [[str(wake["n"]), us(wake["p50_us"]), us(wake["p99_us"]), us(wake["max_us"])]],
            )
        )
    return tables


def _wasm(res: dict[str, Any]) -> list[Table]:
    tables = []
    for name, group in res.items():
        if not isinstance(group, dict):
            continue  # the targets
        latencies = {k: v for k, v in group.items() if isinstance(v, dict) and "p50_us" in v}
        t = Table(f"WebAssembly: {name}", ["path", "calls", "p50", "p99", "max"])
        for label, row in latencies.items():
            t.rows.append([label, str(row["n"]), us(row["p50_us"]), us(row["p99_us"]), us(row["max_us"])])
        t.note = (
            f"stateful / raw p50: {group['stateful_over_raw']:.2f}x; stateless / stateful p50: "
            f"{group['stateless_over_stateful']:.1f}x (medians of per-round ratios); RSS per live stateful "
            f"instance: {group['rss_per_stateful_instance_kib']:,.1f} KiB; RSS per further load of the same "
            f"file: {group['rss_per_load_kib']:,.1f} KiB"
        )
        tables.append(t)
    return tables


RENDER = {
    "http": _http,
    "bridge": _bridge,
    "alternatives": _alternatives,
    "durable": _durable,
    "background": _background,
    "wasm": _wasm,
}


def _scaleout(res: dict[str, Any]) -> list[Table]:
    lat = res["latency"]
    t = Table("Durable calls over HTTP, sequential", ["path", "calls", "p50", "p99"])
    for label, row in lat["calls"].items():
        t.rows.append([label, str(row["n"]), us(row["p50_us"]), us(row["p99_us"])])
    t.note = (
        f"On the owner / 1 process, p50 per round: {x(lat['owner_to_one_p50'])}. "
        f"Forwarding adds {us(lat['forward_added_p50_us'])} to the p50 (median over rounds)."
    )
    c = Table("Durable turns/s in process, 64 callers in all", ["setup", "turns/s"])
    for label, value in res["throughput"].items():
        c.rows.append([label, rate(value)])
    f = Table(
        "Fail-over: signal to the first acknowledged call on a moved key", ["signal", "runs", "median", "max"]
    )
    for label, key in (("kill -9 (lease 2 s)", "kill9_s"), ("SIGTERM (hand-off)", "sigterm_s")):
        runs = res[key]
        f.rows.append([label, str(len(runs)), f"{statistics.median(runs):.2f} s", f"{max(runs):.2f} s"])
    return [t, c, f]


RENDER["scaleout"] = _scaleout


def tables_for(name: str, res: dict[str, Any]) -> list[Table]:
    if "error" in res:
        return [Table(name, ["status"], [[f"failed: {res['error']}"]])]
    try:
        return RENDER[name](res)
    except (KeyError, TypeError, ValueError) as exc:
        return [
            Table(
                name,
                ["status"],
                [[f"could not render the result ({type(exc).__name__}: {exc}); see the JSON"]],
            )
        ]


def targets(results: dict[str, dict[str, Any]]) -> Table:
    t = Table("Targets", ["section", "target", "measured", "reached"])
    for name, res in results.items():
        for target in res.get("targets", []) if isinstance(res, dict) else []:
            t.rows.append(
                [name, str(target["target"]), str(target["value"]), "yes" if target["met"] else "**NO**"]
            )
    return t
