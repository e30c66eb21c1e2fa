"""Importing component files under one canonical module name, and refusing second copies.

A component file imported twice under two names holds two copies of its classes and module
globals: calls reach one copy while code changes the other, and one component reads another's
state as empty. The host imports each file under a name derived from its resolved path, and
refuses a second copy whichever comes first: the file already imported under another name (or
running as `__main__`) when the host loads it, or the host's copy already loaded when other code
imports the file by its plain name (a guard on `sys.meta_path`).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from statefulmcp._errors import ComponentError
from statefulmcp.components import snake_case

_PREFIX = "statefulmcp_components."


def canonical_module_name(path: Path) -> str:
    """The one module name a component file is imported under, whoever loads it.

    Derived from the resolved path, so loading the same file twice replaces the module rather
    than creating a second copy with its own classes and registrations.
    """
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    return f"{_PREFIX}{snake_case(path.stem) or 'module'}_{digest}"


def _advice(path: Path, other: str) -> str:
    module = "__name__" if other == "__main__" else repr(other)
    return (
        f"loading it again would make a second copy of its components. Pass the module object "
        f"instead (host.load(sys.modules[{module}])), or keep the components in a file that nothing "
        "imports, and reach other components' tools through uses=..."
    )


class _SecondCopyGuard(importlib.abc.MetaPathFinder):
    """Refuses `import x` of a file the host already imported as a component."""

    def __init__(self) -> None:
        self.loaded: dict[Path, str] = {}
        self._lock = threading.Lock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.startswith(_PREFIX) or not self.loaded:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            return None
        try:
            origin = Path(spec.origin).resolve()
        except OSError:
            return None
        if origin in self.loaded:
            raise ImportError(
                f"{origin} is loaded by statefulmcp as a component (module {self.loaded[origin]!r}); "
                f"importing it as {fullname!r} would make a second copy of its components and module "
                "state. Reach its tools through uses=..., or move shared code into a module that is not "
                "a component file",
                name=fullname,
                path=str(origin),
            )
        return None

    def remember(self, path: Path, module_name: str) -> None:
        with self._lock:
            self.loaded[path] = module_name
            if self not in sys.meta_path:
                sys.meta_path.insert(0, self)

    def forget(self, path: Path) -> None:
        with self._lock:
            self.loaded.pop(path, None)


_guard = _SecondCopyGuard()


def _refuse_second_copy(path: Path, module_name: str) -> None:
    """Refuse a file that Python already imported under another name (or runs as `__main__`).

    Files are compared by identity (device and inode, one `stat` each), not by resolving every
    module's path: with the SDK loaded that is a thousand `realpath`s, 45 ms per component file.
    """
    try:
        target = os.stat(path)
    except OSError:
        return  # nothing on disk there, so nothing imported from it either
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name == module_name or not isinstance(file, str) or not file:
            continue
        try:
            found = os.stat(file)
        except OSError:
            continue
        same = (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino)
        if same:
            how = (
                "runs as the __main__ script"
                if name == "__main__"
                else f"is already imported as module {name!r}"
            )
            raise ComponentError(f"{path} {how}; {_advice(path, name)}")


class _CheckedSource(importlib.abc.SourceLoader):
    """Source already read (from a checked descriptor, see `_confined`): the import never opens
    the path again, and no bytecode is cached beside it."""

    def __init__(self, path: Path, source: bytes) -> None:
        self.path = str(path)
        self.source = source

    def get_filename(self, fullname: str) -> str:
        return self.path

    def get_data(self, path: str) -> bytes:
        if path != self.path:
            raise OSError(f"{path}: only the checked source is readable")
        return self.source


def import_file(path: Path, source: bytes | None = None) -> ModuleType:
    """Import a Python component file under its canonical module name; errors name the file.

    With `source`, that is the file's text, read and checked by the caller; `path` is then
    where it was found, used as its name only and never resolved or opened.
    """
    if source is None:
        path = path.resolve()
        if not path.is_file():
            raise ComponentError(f"{path}: no such file")
    module_name = canonical_module_name(path)
    _refuse_second_copy(path, module_name)
    loader = None if source is None else _CheckedSource(path, source)
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ComponentError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    _guard.remember(path, module_name)
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        _guard.forget(path)
        if isinstance(exc, SyntaxError):
            raise ComponentError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from exc
        raise ComponentError(f"{path}: failed to import: {type(exc).__name__}: {exc}") from exc
    return module
