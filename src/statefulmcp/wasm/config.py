"""`wasi:config/store` for WebAssembly components: values from the policy, secrets from outside it.

    [config]
    region = "eu-west-1"              # a plain value, kept in the policy file
    secrets = "weather.secrets.toml"  # more values from a file (relative to the policy)

    [config.env]
    api_key = "WEATHER_API_KEY"       # the value of this variable in the server's environment

A policy file is meant to be reviewed and shared, so secrets stay out of it: in the server's
environment, or in a secrets file of `key = "value"` lines that only its owner may read (a
secrets file with any group or other permission is refused, as ssh refuses a private key). The
keys `env` and `secrets` are therefore not config keys, and a key set by two sources is refused.
An environment variable is read when the component asks (unset: the key has no value); a
secrets file when the component is loaded. Values are strings (`wasi:config` has no other kind)
and never appear in `list_components`, which shows keys and where each one comes from.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wasmtime import component as wc

from statefulmcp._errors import ComponentError
from statefulmcp.wasm import calls

_STORE = "wasi:config/store@"


@dataclass(frozen=True, slots=True)
class ConfigPolicy:
    """The config keys of a component, by source; values of `env` keys are read when asked."""

    values: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    """key -> the environment variable that holds its value."""
    secrets: dict[str, str] = field(default_factory=dict)
    secrets_file: Path | None = None

    def lookup(self, key: str) -> str | None:
        if key in self.env:
            return os.environ.get(self.env[key])
        return self.values.get(key, self.secrets.get(key))

    def items(self) -> list[tuple[str, str]]:
        keys = [*self.values, *self.secrets, *self.env]
        return [(key, value) for key in keys if (value := self.lookup(key)) is not None]

    def describe(self) -> dict[str, Any]:
        """Keys and where each value comes from; never a value."""
        return {
            "values": sorted(self.values),
            "env": dict(sorted(self.env.items())),
            "secrets": sorted(self.secrets),
            "secrets_file": str(self.secrets_file) if self.secrets_file else None,
        }


def parse(policy: Path, table: dict[str, Any]) -> ConfigPolicy:
    """The `[config]` table of the policy at `policy`; errors name the file and the key."""
    values: dict[str, str] = {}
    for key, value in table.items():
        if key in ("env", "secrets"):
            continue
        if not isinstance(value, str):
            raise ComponentError(f'{policy}: config.{key}: values are strings; write "{value}" in quotes')
        values[key] = value
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(v, str) and v and "=" not in v for v in env.values()):
        raise ComponentError(f"{policy}: config.env: must map config keys to environment variable names")
    secrets_file = table.get("secrets")
    if secrets_file is not None and not isinstance(secrets_file, str):
        raise ComponentError(f"{policy}: config.secrets: must be the path of a secrets file")
    found = (policy.parent / secrets_file).resolve() if secrets_file else None
    secrets = read_secrets(found, policy) if found else {}
    _check_unique(policy, values, env, secrets)
    return ConfigPolicy(values=values, env=dict(env), secrets=secrets, secrets_file=found)


def _check_unique(policy: Path, *sources: dict[str, str]) -> None:
    seen: set[str] = set()
    for source in sources:
        both = seen & set(source)
        if both:
            raise ComponentError(
                f"{policy}: config key {sorted(both)[0]!r} is set twice ([config], [config.env] or the "
                "secrets file); keep one"
            )
        seen |= set(source)


def read_secrets(path: Path, policy: Path) -> dict[str, str]:
    """The `key = "value"` pairs of a secrets file only its owner may read or write."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ComponentError(f"{policy}: config.secrets: {path} is not a file")
        if info.st_mode & 0o077:
            raise ComponentError(
                f"{policy}: config.secrets: {path} may be read or written by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); a secrets file is for its owner only: chmod 600 {path}"
            )
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ComponentError(f"{policy}: config.secrets: cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ComponentError(
            f"{policy}: config.secrets: {path} is not a TOML table of strings: {exc}"
        ) from None
    for key, value in data.items():
        if not isinstance(value, str):
            raise ComponentError(f"{policy}: config.secrets: {path}: {key}: values are strings")
    return data


def link(linker: wc.Linker, imports: Iterable[str]) -> None:
    """Define `wasi:config/store` under each version the component imports, and only then."""
    names = [name for name in imports if name.startswith(_STORE)]
    if not names:
        return
    with linker.root() as root:
        for name in names:
            with root.add_instance(name) as store:
                store.add_func("get", _get)
                store.add_func("get-all", _get_all)


def _get(store: Any, key: str) -> str | None:
    """`get: func(key) -> result<option<string>, error>`: a value is `ok`, and so is no value."""
    return calls.current.get().policy.config.lookup(key)


def _get_all(store: Any) -> list[tuple[str, str]]:
    return calls.current.get().policy.config.items()
