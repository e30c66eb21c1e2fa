"""Load options, validated where they are written and resolved in one place.

A component declares its options (`@component(...)`, a Wasm policy file); whoever loads it may
override them (`LoadOptions` in `Host.load`, the `load_component` admin tool). Every source
goes through `LoadOptions`, whose constructor refuses a wrong value at once with a message
naming the field: a typo such as `durability="durable"` must never quietly keep state in
memory only. The admin tool's input schema is derived from the same fields, so the schema a
client sees and the validation it gets cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from statefulmcp._errors import ComponentError

Durability = Literal["turn", "memory"]
Activation = Literal["lazy", "eager"]

SESSION_ARGUMENT = "statefulmcp_session"
"""The argument the host adds to every tool of a `per_session` component (a handle from `<name>_open`)."""

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_ARGUMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def check_name(name: object, what: str = "component name") -> str:
    """A name that makes valid MCP tool names (`<name>_<tool>`): letters, digits, underscores."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ComponentError(
            f"{what} {name!r} is not valid: use 1-64 letters, digits and underscores, starting with a letter"
        )
    return name


def check_seconds(value: object, what: str) -> float:
    """A finite, positive number of seconds (NaN or infinity would spin or never fire)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ComponentError(f"{what} must be a finite positive number of seconds, not {value!r}")
    return float(value)


def _check_choice(value: object, field: str, allowed: tuple[str, ...]) -> None:
    if value is not None and value not in allowed:
        raise ComponentError(f"{field}={value!r} is not valid; use one of {', '.join(map(repr, allowed))}")


def _check_bool(value: object, field: str) -> None:
    if value is not None and not isinstance(value, bool):
        raise ComponentError(f"{field}={value!r} is not valid; use true or false")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How a component is loaded. Every field left as `None` keeps what the component declares.

    `name` renames the component (and so its tools); `stateful`, `key`, `handles` and
    `per_session` choose the instance model (`per_session`: one instance per MCP session, see
    `statefulmcp.per_session`; it implies `stateful` and excludes `key` and `handles`);
    `durability` chooses whether `self.state` is persisted after every turn;
    `activate="eager"` activates instances at start-up instead of on their first call.
    `idle_seconds` passivates an instance after that long without a call (see `Host`);
    `handle_idle_seconds` expires a handle after that long without a call.
    `state_resource=True` serves each instance's committed `self.state` as the MCP resource
    `state://<name>/<key>` (off by default: state may be private; see `statefulmcp.state_resources`).
    """

    name: str | None = None
    stateful: bool | None = None
    key: str | None = None
    handles: bool | None = None
    per_session: bool | None = None
    durability: Durability | None = None
    activate: Activation | None = None
    idle_seconds: float | None = None
    handle_idle_seconds: float | None = None
    state_resource: bool | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            check_name(self.name)
        if self.key is not None:
            _check_argument(self.key)
        _check_bool(self.stateful, "stateful")
        _check_bool(self.handles, "handles")
        _check_bool(self.per_session, "per_session")
        _check_bool(self.state_resource, "state_resource")
        if self.per_session:
            self._check_per_session()
        _check_choice(self.durability, "durability", get_args(Durability))
        _check_choice(self.activate, "activate", get_args(Activation))
        for seconds in ("idle_seconds", "handle_idle_seconds"):
            if getattr(self, seconds) is not None:
                check_seconds(getattr(self, seconds), seconds)

    def _check_per_session(self) -> None:
        """`per_session` chooses the key itself (the caller's session), so it takes no other."""
        if self.key is not None:
            raise ComponentError(
                f"per_session=true cannot be combined with key={self.key!r}: a per-session instance is "
                "selected by the caller's MCP session, not by an argument; use one or the other"
            )
        if self.handles:
            raise ComponentError(
                "per_session=true cannot be combined with handles=true: per-session components "
                "already get <name>_open for clients without a session; drop handles"
            )
        if self.activate == "eager":
            raise ComponentError(
                'per_session=true cannot be combined with activate="eager": a per-session instance '
                "is made by its session's first call, so there is nothing to activate at start-up"
            )

    def instance_model(self) -> tuple[bool, str | None, bool]:
        """(stateful, key, handles) as these options choose them: `handles` keys by `session`
        unless told otherwise, and `per_session` keys by a handle in `SESSION_ARGUMENT` or, for a
        client with a session, by that session (which the host resolves per call)."""
        if self.per_session:
            return True, SESSION_ARGUMENT, True
        handles = bool(self.handles)
        return bool(self.stateful), self.key or ("session" if handles else None), handles

    def over(self, declared: LoadOptions) -> LoadOptions:
        """These options where set, `declared` elsewhere."""
        return LoadOptions(
            **{
                f.name: getattr(declared, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                for f in dataclasses.fields(self)
            }
        )


def check_state_resource(name: str, stateful: bool, handles: bool, per_session: bool) -> None:
    """`state_resource` lists instances by key, so it needs keys that are no secret."""
    if not stateful:
        raise ComponentError(
            f"component {name!r} sets state_resource=true but is not stateful; only a stateful "
            "component has state to serve, so add stateful=True"
        )
    if handles or per_session:
        raise ComponentError(
            f"component {name!r} sets state_resource=true with {'per_session' if per_session else 'handles'}"
            "=true: its keys are secrets only their holders may know, and the state resources would list "
            "them to every client; serve what a caller may see through a @resource or a tool instead"
        )


def _check_argument(key: object) -> None:
    if not isinstance(key, str) or not _ARGUMENT.match(key):
        raise ComponentError(f"key={key!r} is not valid: it names a tool argument, such as 'symbol'")


_DESCRIPTIONS = {
    "name": "component name (defaults to the declared one)",
    "stateful": "keep instances alive between calls",
    "key": "argument whose value selects the instance",
    "handles": "mint handles through <name>_open / <name>_close",
    "per_session": "one instance per MCP session (stateful; sessionless clients call <name>_open and pass "
    f"{SESSION_ARGUMENT}); excludes key and handles",
    "durability": "turn: commit self.state after every turn; memory: keep it in memory only",
    "activate": "eager: activate instances at start-up; lazy: on their first call",
    "idle_seconds": "passivate an instance after this many seconds without a call",
    "handle_idle_seconds": "expire a handle after this many seconds without a call",
    "state_resource": "serve each instance's committed state as the resource state://<name>/<key>",
}


def options_schema() -> dict[str, Any]:
    """The JSON schema of `LoadOptions` fields, for the `load_component` admin tool."""
    props: dict[str, Any] = {}
    for f in dataclasses.fields(LoadOptions):
        choices = {"durability": get_args(Durability), "activate": get_args(Activation)}.get(f.name)
        if choices:
            prop: dict[str, Any] = {"type": ["string", "null"], "enum": [*choices, None]}
        elif f.name in ("stateful", "handles", "per_session", "state_resource"):
            prop = {"type": ["boolean", "null"]}
        elif f.name.endswith("seconds"):
            prop = {"type": ["number", "null"], "exclusiveMinimum": 0}
        else:
            prop = {"type": ["string", "null"]}
        props[f.name] = {**prop, "description": _DESCRIPTIONS[f.name]}
    return props


def options_from(arguments: dict[str, Any]) -> LoadOptions:
    """`LoadOptions` from a tool call's arguments; raises `ComponentError` naming a bad field."""
    fields = {f.name for f in dataclasses.fields(LoadOptions)}
    return LoadOptions(**{k: v for k, v in arguments.items() if k in fields})
