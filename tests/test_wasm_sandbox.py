"""The WASI sandbox, through a component built with componentize-py (WASI 0.2, CPython inside).

Deny by default: no directories, no environment, no network. A policy grants directories
read-only or read-write, and environment variables by name.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wasm_components.build import notes_component

from statefulmcp.components import ComponentSpec, InstanceLost, LoadOptions
from statefulmcp.wasm import load_wasm

pytestmark = pytest.mark.slow

GRANTS = """
[env]
allow = ["NOTES_GREETING"]

[[dir]]
host = "shared"
guest = "/shared"
mode = "read-only"

[[dir]]
host = "scratch"
guest = "/scratch"
mode = "read-write"
"""


@pytest.fixture(scope="module")
def notes_wasm() -> Path:
    return notes_component()


def install(directory: Path, built: Path, policy: str | None) -> Path:
    """The built component linked into `directory` as notes.wasm, with its policy beside it."""
    directory.mkdir(parents=True, exist_ok=True)
    link = directory / "notes.wasm"
    link.symlink_to(built)
    if policy is not None:
        (directory / "shared").mkdir()
        (directory / "shared" / "hello.txt").write_text("hello from the host")
        (directory / "scratch").mkdir()
        (directory / "secret").mkdir()
        (directory / "secret" / "key.txt").write_text("do not read")
        (directory / "notes.toml").write_text(policy)
    return link


@pytest.fixture(scope="module")
def sandboxed(
    notes_wasm: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ComponentSpec, Path]]:
    directory = tmp_path_factory.mktemp("sandboxed")
    os.environ["NOTES_GREETING"] = "hi"
    os.environ["NOTES_SECRET"] = "hunter2"
    try:
        yield load_wasm(install(directory, notes_wasm, GRANTS), LoadOptions(stateful=True)), directory
    finally:
        del os.environ["NOTES_GREETING"], os.environ["NOTES_SECRET"]


def call(spec: ComponentSpec, instance: Any, tool: str, **arguments: Any) -> tuple[bool, Any]:
    t = next(t for t in spec.tools if t.name == tool)
    result = t.to_result(t.call(instance, t.validate(arguments)))
    content = result.structured_content
    if result.is_error:
        return False, content["error"]
    return True, content["result"] if isinstance(content, dict) and set(content) == {"result"} else content


def test_toolchain_exports_are_not_tools(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, _ = sandboxed
    assert sorted(t.name for t in spec.tools) == [
        "add_note",
        "connect",
        "get_env",
        "list_notes",
        "panic",
        "read_file",
        "write_file",
    ]


def test_python_state_lives_in_the_instance(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, _ = sandboxed
    a, b = spec.new_instance(), spec.new_instance()
    assert call(spec, a, "add_note", text="one") == (True, 1)
    assert call(spec, a, "add_note", text="two") == (True, 2)
    assert call(spec, a, "list_notes") == (True, ["one", "two"])
    assert call(spec, b, "list_notes") == (True, [])


def test_granted_directories_work_and_read_only_refuses_writes(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, directory = sandboxed
    instance = spec.new_instance()
    assert call(spec, instance, "read_file", path="/shared/hello.txt") == (True, "hello from the host")
    ok, why = call(spec, instance, "write_file", path="/shared/new.txt", content="x")
    assert not ok and ("Read-only" in why or "Permission" in why or "not permitted" in why), why
    assert not (directory / "shared" / "new.txt").exists()
    assert call(spec, instance, "write_file", path="/scratch/out.txt", content="written") == (True, 7)
    assert (directory / "scratch" / "out.txt").read_text() == "written"
    assert call(spec, instance, "read_file", path="/scratch/out.txt") == (True, "written")


def test_undeclared_directories_are_invisible(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, directory = sandboxed
    instance = spec.new_instance()
    for path in (
        str(directory / "secret" / "key.txt"),
        "/secret/key.txt",
        "/etc/passwd",
        "/shared/../secret/key.txt",
    ):
        ok, why = call(spec, instance, "read_file", path=path)
        assert not ok and ("FileNotFoundError" in why or "PermissionError" in why), (path, why)


def test_only_granted_environment_variables_are_visible(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, _ = sandboxed
    instance = spec.new_instance()
    assert call(spec, instance, "get_env", name="NOTES_GREETING") == (True, "hi")
    assert call(spec, instance, "get_env", name="NOTES_SECRET") == (True, None)
    assert call(spec, instance, "get_env", name="PATH") == (True, None)


def test_the_network_is_denied(sandboxed: tuple[ComponentSpec, Path]) -> None:
    spec, _ = sandboxed
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ok, why = call(spec, spec.new_instance(), "connect", host="127.0.0.1", port=port)
    assert not ok and "Permission denied" in why, why


def test_without_a_policy_nothing_is_granted(notes_wasm: Path, tmp_path: Path) -> None:
    spec = load_wasm(install(tmp_path, notes_wasm, None))
    assert spec.permissions is not None
    granted = spec.permissions.describe()
    assert granted["dirs"] == [] and granted["env"] == [] and granted["network"] == "denied"
    instance = spec.new_instance()
    assert call(spec, instance, "get_env", name="PATH") == (True, None)
    assert call(spec, instance, "read_file", path="/tmp")[0] is False
    assert call(spec, instance, "write_file", path="/x.txt", content="x")[0] is False


def test_a_guest_panic_loses_the_instance_and_names_the_exception(
    sandboxed: tuple[ComponentSpec, Path],
) -> None:
    spec, _ = sandboxed
    instance = spec.new_instance()
    call(spec, instance, "add_note", text="kept until the panic")
    with pytest.raises(InstanceLost) as err:
        call(spec, instance, "panic", message="boom")
    assert "RuntimeError: boom" in str(err.value)
    assert "in-memory state was lost" in str(err.value)
    assert call(spec, spec.new_instance(), "list_notes") == (True, [])
