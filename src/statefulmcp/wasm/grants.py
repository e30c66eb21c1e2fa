"""Run-time changes to a loaded WebAssembly component's grants, made by the admin tools.

An operator widens or narrows what a loaded component may touch without reloading it:
environment variables, directories, config keys and network hosts. Limits and load options
are not changed this way (reload the component for those).

- **The policy file is not rewritten.** A reload or a restart starts again from the file, so what
  a reviewer read is what a fresh load gets; `list_components` marks a component whose grants
  were changed at run time (`grants_changed`) and shows the effective ones.
- **A grant reaches instances made after it.** A live instance keeps the sandbox it was made with:
  its environment and preopened directories are fixed when its Store is built, and it checks its
  requests and config reads against the same policy, so one instance never sees half a change.
  A stateless component makes an instance per call, so its next call has the grant.
- **A revoke holds at once**: a live instance may hold what it was given (an open directory, a
  secret read into its memory), so a revoke also drops the component's live instances, each
  after the call it is in. Their in-memory state is lost; the revoke's answer and the log say so.
- **Run-time directories come from the `--allow-load` directory** (relative to it, never outside
  it), as loaded code does: the admin scope does not reach the rest of the file system.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from statefulmcp._errors import ComponentError
from statefulmcp.wasm.config import ConfigPolicy
from statefulmcp.wasm.network import HostGrant
from statefulmcp.wasm.policy import DirGrant, Policy

_MODES = {"read-only": False, "read-write": True}
_STRINGS = {"type": "array", "items": {"type": "string"}}

GRANT_PROPERTIES: dict[str, Any] = {
    "component": {"type": "string", "description": "the loaded WebAssembly component"},
    "env": {**_STRINGS, "description": "environment variable names to pass through"},
    "dirs": {
        "type": "array",
        "description": "directories, relative to the --allow-load directory",
        "items": {
            "type": "object",
            "properties": {
                "host": {"type": "string"},
                "guest": {"type": "string"},
                "mode": {"enum": ["read-only", "read-write"]},
            },
            "required": ["host", "guest", "mode"],
            "additionalProperties": False,
        },
    },
    "network": {**_STRINGS, "description": "host patterns: host, host:port, host:*, *.domain, an address"},
    "config": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "wasi:config values, key -> value",
    },
    "config_env": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "wasi:config keys read from the server's environment, key -> variable",
    },
}
REVOKE_PROPERTIES: dict[str, Any] = {
    "component": GRANT_PROPERTIES["component"],
    "env": {**_STRINGS, "description": "environment variable names"},
    "dirs": {**_STRINGS, "description": "guest paths of granted directories"},
    "network": {**_STRINGS, "description": "host patterns, as granted"},
    "config": {**_STRINGS, "description": "wasi:config keys"},
}


@dataclass(frozen=True, slots=True)
class Change:
    """What one grant or revoke adds or removes."""

    env: tuple[str, ...] = ()
    dirs: tuple[DirGrant, ...] = ()
    dir_guests: tuple[str, ...] = ()
    network: tuple[HostGrant, ...] = ()
    config: dict[str, str] = field(default_factory=dict)
    config_env: dict[str, str] = field(default_factory=dict)
    config_keys: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any(dataclasses.astuple(self))


class Grants:
    """A loaded component's effective policy: the file's, as changed at run time since the load."""

    def __init__(self, policy: Policy) -> None:
        self._lock = threading.Lock()
        self._policy = policy
        self._changed = False

    @property
    def current(self) -> Policy:
        return self._policy

    def describe(self) -> dict[str, Any]:
        return {**self._policy.describe(), "grants_changed": self._changed}

    def grant(self, change: Change) -> Policy:
        with self._lock:
            policy = self._policy
            guests = {d.guest for d in change.dirs}
            config = policy.config
            values = {k: v for k, v in config.values.items() if k not in change.config_env} | change.config
            env = {k: v for k, v in config.env.items() if k not in change.config} | change.config_env
            secrets = {k: v for k, v in config.secrets.items() if k not in change.config and k not in env}
            self._policy = dataclasses.replace(
                policy,
                env=tuple(dict.fromkeys((*policy.env, *change.env))),
                dirs=(*(d for d in policy.dirs if d.guest not in guests), *change.dirs),
                network=dataclasses.replace(
                    policy.network, allow=tuple(dict.fromkeys((*policy.network.allow, *change.network)))
                ),
                config=ConfigPolicy(
                    values=values, env=env, secrets=secrets, secrets_file=config.secrets_file
                ),
            )
            self._changed = True
            return self._policy

    def revoke(self, change: Change) -> Policy:
        """Narrow the policy; anything named that is not granted is refused and nothing changes."""
        with self._lock:
            policy = self._policy
            config = policy.config
            _require(change.env, policy.env, "environment variable")
            _require(change.dir_guests, [d.guest for d in policy.dirs], "directory")
            _require([g.pattern for g in change.network], [g.pattern for g in policy.network.allow], "host")
            _require(change.config_keys, [*config.values, *config.env, *config.secrets], "config key")
            gone = set(change.config_keys)
            self._policy = dataclasses.replace(
                policy,
                env=tuple(name for name in policy.env if name not in change.env),
                dirs=tuple(d for d in policy.dirs if d.guest not in change.dir_guests),
                network=dataclasses.replace(
                    policy.network, allow=tuple(g for g in policy.network.allow if g not in change.network)
                ),
                config=ConfigPolicy(
                    values={k: v for k, v in config.values.items() if k not in gone},
                    env={k: v for k, v in config.env.items() if k not in gone},
                    secrets={k: v for k, v in config.secrets.items() if k not in gone},
                    secrets_file=config.secrets_file,
                ),
            )
            self._changed = True
            return self._policy


def _require(named: Any, granted: Any, what: str) -> None:
    missing = [item for item in named if item not in granted]
    if missing:
        raise ComponentError(
            f"cannot revoke {what} {missing[0]!r}: it is not granted (granted: {list(granted) or 'none'}); "
            "nothing was changed"
        )


def grant_from(arguments: dict[str, Any], root: Path) -> Change:
    """The change a `grant_permissions` call asks for; directories must lie inside `root`."""
    env = tuple(arguments.get("env", ()))
    if not all(name and "=" not in name for name in env):
        raise ComponentError(f"env: must list variable names, not {list(env)!r}")
    config_env = dict(arguments.get("config_env", {}))
    if not all(isinstance(v, str) and v and "=" not in v for v in config_env.values()):
        raise ComponentError("config_env: must map config keys to environment variable names")
    config = dict(arguments.get("config", {}))
    if not all(isinstance(v, str) for v in config.values()):
        raise ComponentError("config: values are strings")
    if set(config) & set(config_env):
        raise ComponentError(
            f"config key {sorted(set(config) & set(config_env))[0]!r} is set twice; keep one"
        )
    return Change(
        env=env,
        dirs=tuple(_dir(root, item) for item in arguments.get("dirs", ())),
        network=tuple(_host(pattern) for pattern in arguments.get("network", ())),
        config=config,
        config_env=config_env,
    )


def revoke_from(arguments: dict[str, Any]) -> Change:
    """The change a `revoke_permissions` call asks for."""
    return Change(
        env=tuple(arguments.get("env", ())),
        dir_guests=tuple(arguments.get("dirs", ())),
        network=tuple(_host(pattern) for pattern in arguments.get("network", ())),
        config_keys=tuple(arguments.get("config", ())),
    )


def _host(pattern: Any) -> HostGrant:
    if not isinstance(pattern, str):
        raise ComponentError(f"network: host patterns are strings, not {pattern!r}")
    try:
        return HostGrant.parse(pattern)
    except ValueError as exc:
        raise ComponentError(f"network: {exc}") from None


def _dir(root: Path, item: Any) -> DirGrant:
    if not isinstance(item, dict) or set(item) != {"host", "guest", "mode"}:
        raise ComponentError('dirs: each is {"host": ..., "guest": ..., "mode": "read-only" or "read-write"}')
    host, guest, mode = item["host"], item["guest"], item["mode"]
    if mode not in _MODES:
        raise ComponentError(f'dirs: mode is "read-only" or "read-write", not {mode!r}')
    if not isinstance(guest, str) or not guest.startswith("/"):
        raise ComponentError(f"dirs: guest must be an absolute path, not {guest!r}")
    if not isinstance(host, str) or Path(host).is_absolute():
        raise ComponentError(
            f"dirs: host is a directory relative to the --allow-load directory, not {host!r}"
        )
    resolved = (root / host).resolve()
    if not resolved.is_relative_to(root):
        raise ComponentError(f"dirs: {host!r} is outside the --allow-load directory")
    if not resolved.is_dir():
        raise ComponentError(f"dirs: {host!r} is not a directory in the --allow-load directory")
    return DirGrant(host=resolved, guest=guest, writable=_MODES[mode])
