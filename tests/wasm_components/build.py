"""Building the componentize-py test component, once per source change.

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
NOTES = HERE / "notes"


def _cache_dir() -> Path:
    root = os.environ.get("STATEFULMCP_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "statefulmcp") / "test-builds"


def notes_component() -> Path:
    """The built notes component (`notes.wasm` in a cache directory), building it if needed."""
    digest = hashlib.sha256(importlib.metadata.version("componentize-py").encode())
    for source in sorted([NOTES / "app.py", *sorted((NOTES / "wit").glob("*.wit"))]):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    out = _cache_dir() / digest.hexdigest()[:16] / "notes.wasm"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        built = Path(tmp) / "notes.wasm"
        cli = Path(sys.executable).with_name("componentize-py")
        subprocess.run(
            [
                str(cli),
                "-d",
                str(NOTES / "wit"),
                "-w",
                "notes",
                "componentize",
                "-p",
                str(NOTES),
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
