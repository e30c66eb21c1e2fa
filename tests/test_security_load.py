"""`--allow-load DIR` loads what is in DIR and nothing else: symlinks are refused, and a path is
resolved once, so swapping it for a symlink between the check and the load cannot reach outside."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from conftest import EXAMPLES, error, http_session, running, value

from statefulmcp._confined import Refused, read_confined

pytestmark = pytest.mark.anyio

INSIDE = """
from statefulmcp import component, tool

@component
class Inside:
    @tool
    def where(self) -> str:
        return "inside"
"""

OUTSIDE = """
from pathlib import Path
from statefulmcp import component, tool

Path({marker!r}).touch()  # proof that code from outside the allowed directory ran

@component
class Outside:
    @tool
    def where(self) -> str:
        return "outside"
"""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(allowed, outside, marker): `outside/evil.py` touches `marker` when imported."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    marker = tmp_path / "outside-code-ran"
    (outside / "evil.py").write_text(OUTSIDE.format(marker=str(marker)))
    (allowed / "inside.py").write_text(INSIDE)
    return allowed, outside, marker


async def test_a_symlink_to_outside_code_is_refused_named_directly_or_in_a_directory(
    tmp_path: Path, dirs: tuple[Path, Path, Path]
) -> None:
    allowed, outside, marker = dirs
    (allowed / "link.py").symlink_to(outside / "evil.py")
    (allowed / "sub").mkdir()
    (allowed / "sub" / "evil.py").symlink_to(outside / "evil.py")
    (allowed / "linked_dir").symlink_to(outside, target_is_directory=True)
    with running(EXAMPLES / "counter.py", "--allow-load", allowed, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            for path in ("link.py", "sub", "sub/evil.py", "linked_dir/evil.py", "linked_dir"):
                refused = error(await session.call_tool("load_component", {"path": path}))
                assert "symlink" in refused, (path, refused)
            outside_path = error(await session.call_tool("load_component", {"path": "../outside/evil.py"}))
            assert "outside the allowed directory" in outside_path
            await session.call_tool("load_component", {"path": "inside.py"})
            assert value(await session.call_tool("inside_where", {})) == "inside"
            names = {c["name"] for c in value(await session.call_tool("list_components", {}))["components"]}
            assert names == {"counter", "inside"}
    assert not marker.exists()


async def test_a_path_swapped_for_a_symlink_while_loading_never_loads_outside_code(
    tmp_path: Path, dirs: tuple[Path, Path, Path]
) -> None:
    """Before: 78 of 300 loads ran the outside file. The swap is atomic (rename over the name),
    so every load sees either the inside file or the symlink, never a missing file."""
    allowed, outside, marker = dirs
    race = allowed / "race.py"
    race.write_text(INSIDE)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        staged = allowed / ".race.tmp"
        while not stop.is_set():
            staged.unlink(missing_ok=True)
            if swaps % 2:
                staged.write_text(INSIDE)
            else:
                staged.symlink_to(outside / "evil.py")
            os.replace(staged, race)
            swaps += 1

    thread = threading.Thread(target=swapper)
    loaded = refused = 0
    with running("--allow-load", allowed, tmp=tmp_path) as server:
        async with http_session(server.url) as session:
            thread.start()
            try:
                for _ in range(200):
                    result = await session.call_tool("load_component", {"path": "race.py"})
                    if result.is_error:
                        assert "symlink" in error(result)
                        refused += 1
                    else:
                        loaded += 1
            finally:
                stop.set()
                thread.join()
            tools = {t.name for t in (await session.list_tools()).tools}
    assert not marker.exists(), "code from outside the allowed directory was imported"
    assert "outside_where" not in tools
    assert swaps > 200 and loaded + refused == 200


def test_the_walk_refuses_symlinked_policies_fifos_and_escapes(tmp_path: Path) -> None:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "c.wasm").write_bytes(b"\0asm")
    (tmp_path / "grant.toml").write_text('[[dir]]\nhost = "/"\nguest = "/all"\nmode = "read-write"\n')
    (allowed / "c.toml").symlink_to(tmp_path / "grant.toml")
    with pytest.raises(Refused, match=r"c\.toml' is a symlink"):
        read_confined(allowed, "c.wasm")
    (allowed / "c.toml").unlink()
    (allowed / "c.toml").write_text("stateful = true\n")
    ((found,), directory) = read_confined(allowed, "./c.wasm")
    assert found.data == b"\0asm" and found.policies == {allowed / "c.toml": "stateful = true\n"}
    assert not directory
    os.mkfifo(allowed / "pipe.py")
    with pytest.raises(Refused, match="not a regular file"):
        read_confined(allowed, "pipe.py")  # refused at once: opening a FIFO must not hang
    for escape in ("/etc/passwd", "../allowed/c.wasm", "a/../../x.py", "", "."):
        with pytest.raises(Refused):
            read_confined(allowed, escape)
