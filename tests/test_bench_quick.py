"""`make bench QUICK=1` works end to end: it exits 0 and writes the JSON and the doc.

This proves the benchmark suite runs; it never checks a number (timed assertions would make the
test suite flaky and say nothing about correctness).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SECTIONS = [
    "## Run",
    "## Targets",
    "## Where statefulmcp loses",
    "## 1. A stateful tool over HTTP vs the bare official SDK",
    "## 2. The bridge, in-process",
    "## 3. statefulmcp vs the alternatives (issue 6)",
    "## 4. Durable turns (issue 3)",
    "## 5. Between calls: 1 kHz ticks and long-polls (issue 4)",
    "## 6. WebAssembly components (issue 5)",
    "## 7. Replicas on PostgreSQL (issue 13)",
]


@pytest.mark.bench
@pytest.mark.timeout(600)
def test_quick_benchmark_runs_and_writes_its_report(tmp_path: Path) -> None:
    out_json, doc, plots = tmp_path / "latest.json", tmp_path / "benchmarks.md", tmp_path / "plots"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--json",
            str(out_json),
            "--doc",
            str(doc),
            "--plots",
            str(plots),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(out_json.read_text())
    assert result["mode"] == "quick"
    assert set(result["results"]) == {
        "http",
        "bridge",
        "alternatives",
        "durable",
        "background",
        "wasm",
        "scaleout",
    }
    for name, group in result["results"].items():
        assert "error" not in group, f"benchmark group {name} failed: {group['error']}\n{done.stderr[-6000:]}"
        assert group.get("available", True), f"benchmark group {name} did not run: {group.get('reason')}"
    text = doc.read_text()
    for section in SECTIONS:
        assert section in text, f"{section!r} missing from the generated doc"
    assert "Targets" in done.stdout
    assert list(plots.glob("*.png")), "no latency plot was written"
