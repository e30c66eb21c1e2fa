"""What a WebAssembly component may touch and spend: grants, limits and load defaults.

Everything is denied unless granted. A policy is a TOML file named after the component and
kept beside it (`notes.wasm` -> `notes.toml`), so whoever installs a component also reviews
what it may do (`notes.yaml` works too, with the same keys):

    stateful = true            # load defaults; load options given at load time win
    key = "session"            # or `per_session = true`: one instance per MCP session, no key
    idle_seconds = 300         # passivate an instance after this long without a call (its memory goes)

    [limits]
    deadline_seconds = 10      # wall clock per call (epoch interruption)
    fuel = 50_000_000          # optional: instructions per call, roughly
    memory_mib = 64            # linear memory per instance, all its memories together
    memories = 1               # linear memories an instance may have (each gets memory_mib / memories)
    table_elements = 50_000    # entries per table (at most 16 tables)
    instances = 16             # live instances (keys, handles) kept; the least recently used idle one goes

    [env]
    allow = ["GREETING"]       # passed through from the host's environment, by name

    [[dir]]
    host = "data"              # relative to the policy file
    guest = "/data"
    mode = "read-only"         # or "read-write"; never implied

    [network]                  # wasi:http outgoing requests (see network.py)
    allow = ["api.example.com", "*.example.org:8443"]
    timeout_seconds = 30       # per request, connect to last byte
    max_request_bytes = 1_048_576
    max_response_bytes = 16_777_216

    [config]                   # wasi:config/store values (see config.py)
    region = "eu-west-1"
    [config.env]
    api_key = "WEATHER_API_KEY"

Without a policy file the component gets no directories, no environment, no network, no config
and the default limits.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from statefulmcp.components import ComponentError, LoadOptions
from statefulmcp.wasm import config, network
from statefulmcp.wasm.config import ConfigPolicy
from statefulmcp.wasm.network import HostGrant, NetworkPolicy

DEFAULT_DEADLINE_SECONDS = 10.0
DEFAULT_MEMORY_MIB = 64
DEFAULT_MEMORIES = 1
DEFAULT_TABLE_ELEMENTS = 50_000
DEFAULT_INSTANCES = 16
MAX_TABLES = 16
"""Tables per instance (componentize-py builds have 2); with `table_elements` they bound the
memory tables take: 16 x 50,000 entries x 8 bytes = 6.4 MB by default."""

_TOP_KEYS = {
    "name",
    "stateful",
    "key",
    "handles",
    "per_session",
    "idle_seconds",
    "handle_idle_seconds",
    "limits",
    "env",
    "dir",
    "network",
    "config",
}
_NETWORK_KEYS = {"allow", "timeout_seconds", "max_request_bytes", "max_response_bytes"}
_LIMIT_KEYS = {"deadline_seconds", "fuel", "memory_mib", "memories", "table_elements", "instances"}
_DIR_KEYS = {"host", "guest", "mode"}
_MODES = {"read-only": False, "read-write": True}


@dataclass(frozen=True, slots=True)
class DirGrant:
    """A host directory the component sees at `guest`; `writable` only when granted read-write."""

    host: Path
    guest: str
    writable: bool


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-call and per-instance limits; a call that exceeds one traps and loses its instance.

    Memory and tables are bounded per Store (one per instance), not per linear memory: wasmtime's
    store limits cap each memory's size and the number of memories, so `memory_mib` is split
    evenly across the `memories` an instance may have. A component that instantiates its core
    module four times no longer holds four times its cap: it fails to load, naming `memories`.
    """

    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    fuel: int | None = None
    memory_mib: int = DEFAULT_MEMORY_MIB
    memories: int = DEFAULT_MEMORIES
    table_elements: int = DEFAULT_TABLE_ELEMENTS
    instances: int = DEFAULT_INSTANCES

    @property
    def bytes_per_memory(self) -> int:
        return self.memory_mib * 1024 * 1024 // self.memories


@dataclass(frozen=True, slots=True)
class Policy:
    """The grants, limits and load defaults of one component."""

    dirs: tuple[DirGrant, ...] = ()
    env: tuple[str, ...] = ()
    network: NetworkPolicy = field(default_factory=NetworkPolicy)
    config: ConfigPolicy = field(default_factory=ConfigPolicy)
    limits: Limits = field(default_factory=Limits)
    options: LoadOptions = field(default_factory=LoadOptions)
    source: Path | None = None

    def describe(self) -> dict[str, Any]:
        """The grants and limits as `list_components` shows them."""
        return {
            "policy": str(self.source) if self.source else None,
            "dirs": [
                {"host": str(d.host), "guest": d.guest, "mode": "read-write" if d.writable else "read-only"}
                for d in self.dirs
            ],
            "env": list(self.env),
            "network": self.network.describe(),
            "config": self.config.describe(),
            "limits": {
                "deadline_seconds": self.limits.deadline_seconds,
                "fuel": self.limits.fuel,
                "memory_mib": self.limits.memory_mib,
                "memories": self.limits.memories,
                "table_elements": self.limits.table_elements,
                "instances": self.limits.instances,
            },
        }


_FORMATS: dict[str, Callable[[str], Any]] = {
    ".toml": tomllib.loads,
    ".yaml": yaml.safe_load,
    ".yml": yaml.safe_load,
}


def policy_path(component: Path) -> Path | None:
    """The policy file beside a component (same stem, `.toml`, `.yaml` or `.yml`), if any."""
    found = [component.with_suffix(suffix) for suffix in _FORMATS if component.with_suffix(suffix).is_file()]
    if len(found) > 1:
        raise ComponentError(
            f"{component}: several policy files ({', '.join(p.name for p in found)}); keep exactly one"
        )
    return found[0] if found else None


def load_policy(component: Path, texts: dict[Path, str] | None = None) -> Policy:
    """The policy beside `component`, or the deny-everything default when there is none.

    `texts` are the policy files beside it, already read by the caller (path -> text); then the
    disk is not looked at.
    """
    if texts is None:
        path = policy_path(component)
    elif len(texts) > 1:
        raise ComponentError(
            f"{component}: several policy files ({', '.join(p.name for p in texts)}); keep exactly one"
        )
    else:
        path = next(iter(texts), None)
    if path is None:
        return Policy()
    try:
        data = _FORMATS[path.suffix](path.read_text() if texts is None else texts[path])
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ComponentError(f"{path}: cannot read the policy of {component.name}: {exc}") from None
    if data is None:
        return Policy(source=path)
    if not isinstance(data, dict):
        raise ComponentError(f"{path}: a policy is a table of keys, not {type(data).__name__}")
    return _parse(path, data)


class _Reader:
    """Typed access to one table of a policy file, with errors that name the file and the key."""

    def __init__(self, path: Path, table: dict[str, Any], where: str, allowed: set[str]) -> None:
        self.path, self.table, self.where = path, table, where
        unknown = sorted(set(table) - allowed)
        if unknown:
            self.fail(unknown[0], f"unknown key; expected one of {sorted(allowed)}")

    def fail(self, key: str, problem: str) -> None:
        raise ComponentError(f"{self.path}: {self.where}{key}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = self.table.get(key)
        if value is not None and (
            not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
        ):
            self.fail(key, f"must be {what}, not {value!r}")
        return value


def _parse(path: Path, data: dict[str, Any]) -> Policy:
    top = _Reader(path, data, "", _TOP_KEYS)
    limits_table = top.get("limits", dict, "a table") or {}
    lim = _Reader(path, limits_table, "limits.", _LIMIT_KEYS)
    deadline = lim.get("deadline_seconds", (int, float), "a number of seconds")
    fuel = lim.get("fuel", int, "a whole number")
    memory = lim.get("memory_mib", int, "a whole number of MiB")
    counts = {key: lim.get(key, int, "a whole number") for key in ("memories", "table_elements", "instances")}
    for key, value in (
        ("deadline_seconds", deadline),
        ("fuel", fuel),
        ("memory_mib", memory),
        *counts.items(),
    ):
        if value is not None and value <= 0:
            lim.fail(key, "must be positive")
    env_table = top.get("env", dict, "a table") or {}
    env = _Reader(path, env_table, "env.", {"allow"}).get("allow", list, "a list of variable names") or []
    if not all(isinstance(name, str) and name and "=" not in name for name in env):
        top.fail("env.allow", f"must list variable names, not {env!r}")
    return Policy(
        dirs=tuple(
            _dir(path, i, table) for i, table in enumerate(top.get("dir", list, "an array of tables") or [])
        ),
        env=tuple(env),
        network=_network(path, top.get("network", dict, "a table") or {}),
        config=config.parse(path, top.get("config", dict, "a table") or {}),
        limits=Limits(
            deadline_seconds=float(deadline) if deadline is not None else DEFAULT_DEADLINE_SECONDS,
            fuel=fuel,
            memory_mib=memory if memory is not None else DEFAULT_MEMORY_MIB,
            memories=counts["memories"] or DEFAULT_MEMORIES,
            table_elements=counts["table_elements"] or DEFAULT_TABLE_ELEMENTS,
            instances=counts["instances"] or DEFAULT_INSTANCES,
        ),
        options=_options(path, top),
        source=path,
    )


def _options(path: Path, top: _Reader) -> LoadOptions:
    """The load defaults at the policy's top level; a bad one or a bad combination names the file."""
    read = {
        "name": top.get("name", str, "a string"),
        "stateful": top.get("stateful", bool, "true or false"),
        "key": top.get("key", str, "an argument name"),
        "handles": top.get("handles", bool, "true or false"),
        "per_session": top.get("per_session", bool, "true or false"),
        "idle_seconds": top.get("idle_seconds", (int, float), "a number of seconds"),
        "handle_idle_seconds": top.get("handle_idle_seconds", (int, float), "a number of seconds"),
    }
    try:
        return LoadOptions(**read)
    except ComponentError as exc:
        raise ComponentError(f"{path}: {exc}") from None


def _dir(path: Path, index: int, table: Any) -> DirGrant:
    if not isinstance(table, dict):
        raise ComponentError(f"{path}: dir[{index}]: must be a table with host, guest and mode")
    reader = _Reader(path, table, f"dir[{index}].", _DIR_KEYS)
    host = reader.get("host", str, "a directory path")
    guest = reader.get("guest", str, "an absolute guest path")
    mode = reader.get("mode", str, '"read-only" or "read-write"')
    if host is None or guest is None:
        reader.fail("host" if host is None else "guest", "is required")
    if mode not in _MODES:
        reader.fail("mode", 'is required: say "read-only" or "read-write" explicitly')
    if not guest.startswith("/"):
        reader.fail("guest", f"must be an absolute path, not {guest!r}")
    resolved = (path.parent / host).resolve()
    if not resolved.is_dir():
        reader.fail("host", f"{resolved} is not a directory")
    return DirGrant(host=resolved, guest=guest, writable=_MODES[mode])


def _network(path: Path, table: dict[str, Any]) -> NetworkPolicy:
    reader = _Reader(path, table, "network.", _NETWORK_KEYS)
    patterns = reader.get("allow", list, "a list of host patterns") or []
    allow = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            reader.fail("allow", f"must list host patterns as strings, not {pattern!r}")
        try:
            allow.append(HostGrant.parse(pattern))
        except ValueError as exc:
            reader.fail("allow", str(exc))
    timeout = reader.get("timeout_seconds", (int, float), "a number of seconds")
    sizes = {
        key: reader.get(key, int, "a whole number of bytes")
        for key in ("max_request_bytes", "max_response_bytes")
    }
    for key, value in (("timeout_seconds", timeout), *sizes.items()):
        if value is not None and value <= 0:
            reader.fail(key, "must be positive")
    return NetworkPolicy(
        allow=tuple(allow),
        timeout_seconds=float(timeout) if timeout is not None else network.DEFAULT_TIMEOUT_SECONDS,
        max_request_bytes=sizes["max_request_bytes"] or network.DEFAULT_MAX_REQUEST_BYTES,
        max_response_bytes=sizes["max_response_bytes"] or network.DEFAULT_MAX_RESPONSE_BYTES,
    )
