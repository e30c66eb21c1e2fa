"""The official MCP conformance suite, run against tests/conformance/everything.py: all 32 server
scenarios of the pinned suite (0.1.16) must run, and every one must pass.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conformance import harness


@pytest.mark.slow
def test_every_conformance_scenario_passes(tmp_path: Path) -> None:
    assert shutil.which("npm") is not None, (
        "the conformance suite is installed with npm: install Node.js and npm"
    )
    results = harness.run_against_everything(tmp_path / "server.log")
    assert len(results) == 32, f"the pinned suite has 32 server scenarios, this run saw {sorted(results)}"
    failing = sorted(name for name, passed in results.items() if not passed)
    assert not failing, f"conformance scenarios fail: {failing} (see {tmp_path / 'server.log'})"
