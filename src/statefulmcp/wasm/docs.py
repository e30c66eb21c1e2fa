"""The documentation a component carries: WIT doc comments, read from its `package-docs` section.

The component binary format has no place for doc comments, so `wit-component` keeps them in a
custom section named `package-docs`: one version byte (0 or 1) and then JSON,

    {"docs": ..., "worlds": {world: {"funcs": {f: docs}, "func_exports": {f: docs},
                                     "interfaces": {i: {"funcs": ...}}, "interface_exports": ...}},
     "interfaces": {i: {"docs": ..., "funcs": {f: docs}}}}

where `docs` of a function is a string (version 0) or `{"docs": string, "stability": ...}`
(version 1). `wasm-tools component wit --wasm` writes it, and `wit-docs-inject` (what wassette's
examples use) adds it to a built component; componentize-py and componentize-js (what `jco
componentize` runs) leave it out today. A section that is missing or unreadable only means generic descriptions, never a failed load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import wasmtime

log = logging.getLogger("statefulmcp.wasm")

SECTION = "package-docs"
_HEADER = 8  # "\0asm" and a 4-byte version/layer


@dataclass(frozen=True, slots=True)
class PackageDocs:
    """Doc comments of exported functions, by interface (short name, or None for the world)."""

    functions: dict[tuple[str | None, str], str] = field(default_factory=dict)

    def of(self, interface: str | None, function: str) -> str | None:
        """The doc comment of `function` (in `interface`, e.g. `ns:pkg/geo@1.0.0`), if it has one."""
        short = None if interface is None else interface.rpartition("/")[2].partition("@")[0]
        return self.functions.get((short, function))


def package_docs(source: bytes) -> PackageDocs:
    """The docs in `source` (a component binary, or WAT text), or none."""
    try:
        binary = source if source.startswith(b"\0asm") else bytes(wasmtime.wat2wasm(source.decode()))
        data = _custom_section(binary, SECTION)
        if data is None:
            return PackageDocs()
        if data[:1] not in (b"\x00", b"\x01"):
            raise ValueError(f"unknown version {data[:1]!r}")
        return PackageDocs(_functions(json.loads(data[1:])))
    except (ValueError, UnicodeDecodeError, IndexError, wasmtime.WasmtimeError) as exc:
        log.warning("ignoring the component's %s section: %s", SECTION, exc)
        return PackageDocs()


def _leb128(data: bytes, at: int) -> tuple[int, int]:
    """An unsigned LEB128 number at `at`, and the offset after it."""
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at


def _custom_section(binary: bytes, name: str) -> bytes | None:
    """The body of the first top-level custom section called `name`, skipping every other section."""
    at = _HEADER
    wanted = name.encode()
    while at < len(binary):
        section, size_at = binary[at], at + 1
        size, body = _leb128(binary, size_at)
        end = body + size
        if end > len(binary):
            raise ValueError("a section runs past the end of the file")
        if section == 0:
            length, text = _leb128(binary, body)
            if binary[text : text + length] == wanted:
                return binary[text + length : end]
        at = end
    return None


def _doc(entry: Any) -> str | None:
    """A function's docs: a string (version 0) or `{"docs": ...}` (version 1)."""
    text = entry.get("docs") if isinstance(entry, dict) else entry
    return (text.strip() or None) if isinstance(text, str) else None


def _add(found: dict[tuple[str | None, str], str], interface: str | None, funcs: Any) -> None:
    if isinstance(funcs, dict):
        for function, entry in funcs.items():
            text = _doc(entry)
            if text is not None:
                found.setdefault((interface, function), text)


def _functions(package: Any) -> dict[tuple[str | None, str], str]:
    if not isinstance(package, dict):
        raise ValueError("expected a JSON object")
    found: dict[tuple[str | None, str], str] = {}
    for name, interface in (package.get("interfaces") or {}).items():
        if isinstance(interface, dict):
            _add(found, name, interface.get("funcs"))
    for world in (package.get("worlds") or {}).values():
        if not isinstance(world, dict):
            continue
        _add(found, None, world.get("func_exports"))
        _add(found, None, world.get("funcs"))
        for key in ("interface_exports", "interfaces"):
            for name, interface in (world.get(key) or {}).items():
                if isinstance(interface, dict):
                    _add(found, name, interface.get("funcs"))
    return found
