"""Building the componentize-py and componentize-js test components, once per source change.

componentize-py bundles its own Python runtime, so the build needs no network. componentize-js
is installed from the npm registry with `npm ci`, at the versions `js/package-lock.json` pins,
once per lock file. Builds take several seconds (a componentize-js one about twenty), so each
result is cached by a hash of its sources and toolchain, in `$STATEFULMCP_CACHE_DIR`: the tests
point that at the test run's temporary directory, shared by its xdist workers, which take a
file lock so that one of them installs or builds while the other waits for it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).parent
JS = HERE / "js"


def _cache_dir() -> Path:
    root = os.environ.get("STATEFULMCP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "statefulmcp") / "test-builds"


def notes_component() -> Path:
    """The built notes component (`notes.wasm` in a cache directory), building it if needed."""
    return _build("notes")


def fetch_component() -> Path:
    """The built fetch component (wasi:http and wasi:config/store), building it if needed."""
    return _build("fetch")


def _build(name: str) -> Path:
    source_dir = HERE / name
    digest = hashlib.sha256(importlib.metadata.version("componentize-py").encode())
    for source in sorted([source_dir / "app.py", *sorted((source_dir / "wit").rglob("*.wit"))]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    out = _cache_dir() / digest.hexdigest()[:16] / f"{name}.wasm"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / f"{name}.wasm"
        cli = Path(sys.executable).with_name("componentize-py")
        subprocess.run(
            [
                str(cli),
                "-d",
                str(source_dir / "wit"),
                "-w",
                name,
                "componentize",
                "-p",
                str(source_dir),
                "app",
                "-o",
                str(built),
            ],
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        os.replace(built, out)
    return out


def componentize_js() -> Path:
    """componentize-js's command-line script, installed with `npm ci` if this lock file's is not."""
    digest = hashlib.sha256()
    for pinned in (JS / "package.json", JS / "package-lock.json"):
        digest.update(pinned.read_bytes() + b"\0")
    root = _cache_dir() / f"npm-{digest.hexdigest()[:16]}"
    cli = root / "node_modules" / "@bytecodealliance" / "componentize-js" / "src" / "cli.js"
    with _locked(root.with_name(root.name + ".lock")):
        if (root / ".installed").is_file():
            return cli
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS / name, root / name)
        # --engine-strict: a Node.js older than package.json's `engines` fails here, saying so.
        _run([_tool("npm"), "ci", "--engine-strict", "--ignore-scripts", "--no-audit", "--no-fund"], root)
        (root / ".installed").touch()
    return cli


def js_component(world: str, cli: Path) -> Path:
    """The component of `js/<world>.js` for the world `<world>` of `js/wit`, built with `cli`."""
    digest = hashlib.sha256()
    for source in [JS / "package-lock.json", JS / f"{world}.js", *sorted((JS / "wit").rglob("*.wit"))]:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    out = _cache_dir() / f"js-{digest.hexdigest()[:16]}" / f"{world}.wasm"
    out.parent.mkdir(parents=True, exist_ok=True)
    with _locked(out.with_suffix(".lock")):
        if out.is_file():
            return out
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            built = Path(tmp) / f"{world}.wasm"
            command = [_tool("node"), str(cli), str(JS / f"{world}.js"), "--wit", str(JS / "wit")]
            _run([*command, "--world-name", world, "--out", str(built)], Path(tmp))
            os.replace(built, out)
    return out


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} is not on PATH: the componentize-js tests need Node.js 20.19 or later with npm"
        )
    return found


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
        )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Held by one process at a time: the other xdist worker waits here, then finds the result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
