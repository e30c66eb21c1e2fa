"""Building the componentize-py test components, once per source change.

componentize-py bundles its own Python runtime, so the build needs no network. It takes several
seconds, so the result is cached by a hash of the app, its WIT and the componentize-py version.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


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
