"""Figure 1: a stateful statefulmcp tool over HTTP against the same tool on a bare SDK server.

Issue 2's target: the statefulmcp call costs at most 1.10x the bare server's. The bare server is
the official `MCPServer` as its docs show it (module-global dict, default middleware), under
uvicorn with the same settings as `statefulmcp serve`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks import procs
from benchmarks.compare import Design, concurrent, sequential

COMPONENT = Path(__file__).parent / "components" / "counter.py"
SM = "statefulmcp (memory)"
BARE = "bare SDK"


async def run(quick: bool) -> dict[str, Any]:
    rounds, calls, seconds = (2, 150, 1.0) if quick else (5, 400, 4.0)
    out: dict[str, Any] = {"rounds": rounds, "calls_per_block": calls, "concurrent_seconds": seconds}
    samples: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        work = Path(tmp)
        with (
            procs.running("statefulmcp", procs.statefulmcp_argv(COMPONENT), work) as sm,
            procs.running("bare", ["-m", "benchmarks.servers.bare_sdk"], work) as bare,
        ):
            designs = [Design(SM, sm.url, "counter_increment"), Design(BARE, bare.url, "increment")]
            for mode in ("legacy", "modern"):
                seq, seq_samples = await sequential(
                    designs, mode=mode, rounds=rounds, calls=calls, references=(BARE,)
                )
                conc, conc_samples = await concurrent(
                    designs, mode=mode, rounds=rounds, seconds=seconds, clients=32, keys=4, references=(BARE,)
                )
                out[mode] = {"sequential": seq, "concurrent32": conc}
                samples[f"http_{mode}_sequential"] = seq_samples
                samples[f"http_{mode}_concurrent32"] = conc_samples
    out["targets"] = [
        {
            "target": f"stateful call p50 <= 1.10x bare SDK ({mode}, sequential)",
            "value": f"{out[mode]['sequential'][SM]['ratio_p50'][BARE]:.2f}x",
            "met": out[mode]["sequential"][SM]["ratio_p50"][BARE] <= 1.10,
        }
        for mode in ("legacy", "modern")
    ]
    out["_samples"] = samples
    return out
