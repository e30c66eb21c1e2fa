"""Component files read from inside one directory, each path resolved exactly once.

`--allow-load DIR` lets a client name files to load. Checking where a path resolves and then
loading it by path leaves a window between the two: a file swapped for a symlink to code
outside DIR in between was loaded in 78 of 300 tries. Here the path is walked one name at a
time from a descriptor of DIR, with `O_NOFOLLOW` at every step, so no symlink is followed
anywhere, and the bytes are read from the descriptor that was checked. Loading uses those bytes
and never the path again; a WebAssembly component's policy file is read through the same
directory descriptor.

Symlinks inside DIR are refused, not followed, even when they point inside it: what a client
may load is what is in DIR, as files.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from statefulmcp._errors import ComponentError

SUFFIXES = (".py", ".wasm")
POLICY_SUFFIXES = (".toml", ".yaml", ".yml")
MAX_BYTES = 512 * 1024 * 1024
"""Largest component file read (componentize-py builds are about 40 MB)."""

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in DIR must not hang the loader; regular files ignore it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Refused(ComponentError):
    """A path that does not name files inside the allowed directory."""


@dataclass(frozen=True, slots=True)
class ComponentFile:
    """A component file's contents, read once from a checked descriptor.

    `path` is where it was found: it names the module and is shown to users, and is never
    opened again. `policies` are the policy files beside a `.wasm` (name -> text).
    """

    path: Path
    data: bytes
    policies: dict[Path, str] = field(default_factory=dict)


def read_confined(root: Path, relative: str) -> tuple[list[ComponentFile], bool]:
    """The component files `relative` names inside `root` (a file, or a directory's files), and
    whether it named a directory. Raises `Refused` for anything outside `root` or not a file."""
    parts = _parts(relative)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts[:-1]):
            inner = _open_at(fd, name, _DIR_FLAGS, "/".join(parts[: i + 1]))
            os.close(fd)
            fd = inner
        target = _open_at(fd, parts[-1], _FILE_FLAGS, relative)
        try:
            mode = os.fstat(target).st_mode
            if stat.S_ISDIR(mode):
                return _directory(target, root.joinpath(*parts), relative), True
            if not stat.S_ISREG(mode):
                raise Refused(f"refused: {relative!r} is not a regular file")
            return [_file(fd, target, root.joinpath(*parts))], False
        finally:
            os.close(target)
    finally:
        os.close(fd)


def _parts(relative: str) -> list[str]:
    if not relative or "\x00" in relative:
        raise Refused("refused: `path` must be a non-empty file path without NUL characters")
    path = PurePosixPath(relative)
    parts = [part for part in path.parts if part != "."]
    if path.is_absolute() or ".." in parts:
        raise Refused(
            f"refused: {relative!r} is outside the allowed directory (a path inside it has no '/' at the start and no '..')"
        )
    if not parts:
        raise Refused(
            f"refused: {relative!r} names the allowed directory itself; name a file or a subdirectory"
        )
    return parts


def _open_at(dir_fd: int, name: str, flags: int, shown: str) -> int:
    """Open `name` in the directory `dir_fd`, never following a symlink."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOTDIR and _is_symlink(dir_fd, name):
            exc.errno = errno.ELOOP  # O_DIRECTORY on a symlink says ENOTDIR; say what it is
        raise _refusal(exc, shown) from None


def _is_symlink(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _refusal(exc: OSError, shown: str) -> Refused:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return Refused(
            f"refused: {shown!r} is a symlink; symlinks inside the allowed directory are not followed. "
            "Copy the file in instead"
        )
    if exc.errno == errno.ENOTDIR:
        return Refused(f"refused: {shown!r} is not a directory")
    if exc.errno == errno.ENOENT:
        return Refused(f"load failed: {shown!r}: no such file or directory in the allowed directory")
    return Refused(f"load failed: {shown!r}: {exc.strerror}")


def _directory(dir_fd: int, shown: Path, relative: str) -> list[ComponentFile]:
    names = sorted(
        name for name in os.listdir(dir_fd) if name.endswith(SUFFIXES) and not name.startswith("_")
    )
    if not names:
        raise Refused(f"load failed: {relative!r}: no .py or .wasm files in this directory")
    files = []
    for name in names:
        fd = _open_at(dir_fd, name, _FILE_FLAGS, f"{relative.rstrip('/')}/{name}")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Refused(f"refused: {relative.rstrip('/')}/{name!r} is not a regular file")
            files.append(_file(dir_fd, fd, shown / name))
        finally:
            os.close(fd)
    return files


def _file(dir_fd: int, fd: int, path: Path) -> ComponentFile:
    if path.suffix not in SUFFIXES:
        raise Refused(f"load failed: {path.name}: expected a .py or .wasm file or a directory")
    policies: dict[Path, str] = {}
    if path.suffix == ".wasm":
        for suffix in POLICY_SUFFIXES:
            beside = path.with_suffix(suffix)
            try:
                policy = os.open(beside.name, _FILE_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _refusal(exc, beside.name) from None
            try:
                policies[beside] = _read(policy, beside).decode(errors="replace")
            finally:
                os.close(policy)
    return ComponentFile(path, _read(fd, path), policies)


def _read(fd: int, path: Path) -> bytes:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise Refused(f"refused: {path.name} is not a regular file")
    chunks = []
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
        if total > MAX_BYTES:
            raise Refused(f"load failed: {path.name} is larger than {MAX_BYTES >> 20} MiB")
        chunks.append(chunk)
    return b"".join(chunks)
