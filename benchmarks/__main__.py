"""`python -m benchmarks [--quick]`: run every figure group, print the tables, write JSON and the doc.

Groups run one after another (never two at once: they would steal each other's CPU), each
starting and stopping its own processes. A group that fails is reported as failed and the run
goes on, so one broken feature never hides the other figures.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import logging
import math
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from benchmarks import machine, plots, procs, report
from benchmarks.doc import write_doc

ROOT = procs.ROOT
GROUPS = ("http", "bridge", "alternatives", "durable", "background", "wasm", "scaleout")
MODULES = {
    "http": "benchmarks.http_bench",
    "bridge": "benchmarks.bridge_bench",
    "alternatives": "benchmarks.alternatives_bench",
    "durable": "benchmarks.durable_bench",
    "background": "benchmarks.background_bench",
    "scaleout": "benchmarks.scaleout_bench",
}


# Which plot files belong to which group, for --render-only.
PLOT_PREFIXES = {
    "http": "http_",
    "bridge": "bridge_",
    "alternatives": "alt_",
    "durable": "durable",
    "background": "wakeup",
}


def _load_runner(name: str) -> Callable[[bool], Awaitable[dict[str, Any]]] | str:
    """The group's `run`, or why it cannot run (the WebAssembly group is optional)."""
    module_name = MODULES.get(name, "benchmarks.wasm_bench")
    if name == "wasm" and importlib.util.find_spec(module_name) is None:
        return "benchmarks/wasm_bench.py does not exist yet"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        return f"{module_name} does not import: {type(exc).__name__}: {exc}"
    run = getattr(module, "run", None)
    if run is None:
        return f"{module_name} has no run(quick) function"
    if asyncio.iscoroutinefunction(run):
        return run  # type: ignore[no-any-return]

    async def in_thread(quick: bool) -> dict[str, Any]:
        # A sync runner (the WebAssembly one) runs off the loop so the loop stays responsive.
        result: dict[str, Any] = await asyncio.to_thread(run, quick)
        return result

    return in_thread


async def _run_group(name: str, quick: bool) -> dict[str, Any]:
    runner = _load_runner(name)
    if isinstance(runner, str):
        return {"available": False, "reason": runner}
    try:
        result = await runner(quick)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        while isinstance(exc, ExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the SDK's task groups wrap the one error that matters
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        procs.kill_all()
    return (
        result
        if isinstance(result, dict)
        else {"error": f"run() returned {type(result).__name__}, not a dict"}
    )


def _clean(value: Any) -> Any:
    """JSON-safe: NaN becomes null."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


async def _main(args: argparse.Namespace) -> int:
    quick = args.quick
    started = time.time()
    results: dict[str, dict[str, Any]] = {}
    durations: dict[str, float] = {}
    plot_paths: dict[str, list[Path]] = {}
    for name in args.only or GROUPS:
        print(f"-- running {name} ({'quick' if quick else 'full'}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = await _run_group(name, quick)
        durations[name] = time.perf_counter() - t0
        samples = result.pop("_samples", {}) if isinstance(result, dict) else {}
        plot_paths[name] = [
            p for plot, series in samples.items() if (p := plots.cdf(plot, series, args.plots)) is not None
        ]
        results[name] = result
        for table in report.tables_for(name, result):
            print(table.text() + "\n", flush=True)
    print(report.targets(results).text().replace("**", ""))
    command = (
        "make bench"
        + (" QUICK=1" if quick else "")
        + f"   (runs: {shlex.join([Path(sys.executable).name, '-m', 'benchmarks', *sys.argv[1:]])})"
    )
    document = {
        "mode": "quick" if quick else "full",
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "seconds": round(time.time() - started, 1),
        "group_seconds": {k: round(v, 1) for k, v in durations.items()},
        "machine": machine.describe(ROOT),
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_clean(document), indent=2, default=str) + "\n")
    write_doc(args.doc, document, plot_paths)
    print(f"\nwrote {args.json} and {args.doc} in {document['seconds']} s", file=sys.stderr)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples; finishes in under 2 minutes")
    parser.add_argument("--only", action="append", choices=GROUPS, help="run only this group (repeatable)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the doc from the JSON; run nothing"
    )
    args = parser.parse_args()
    if args.render_only:
        document = json.loads(args.json.read_text())
        plot_paths = {
            name: sorted(args.plots.glob(f"{prefix}*.png")) for name, prefix in PLOT_PREFIXES.items()
        }
        write_doc(args.doc, document, plot_paths)
        return

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through every `finally`, which stops the servers

    signal.signal(signal.SIGTERM, terminate)
    # The SDK client logs a warning for every session whose server was killed on purpose.
    logging.getLogger("mcp").setLevel(logging.ERROR)
    try:
        code = uvloop.run(_main(args))
    finally:
        procs.kill_all()
    raise SystemExit(code)


if __name__ == "__main__":
    main()
