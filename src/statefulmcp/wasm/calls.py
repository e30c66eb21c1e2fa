"""The WebAssembly instance whose call runs on this thread, for host functions that act for it.

`wasi:http` and `wasi:config` are host functions defined once per loaded component, but what they
may do depends on the instance calling them: the policy it was made under, and the gate helper
in its Store. wasmtime hands a host function only a store context, so each instance says who it
is for the length of each call into it (calls to one instance never overlap, and a host
function runs on the calling thread).

It also keeps what the host refused during the call (`wasi:http` requests without a grant), so
that the caller is told even when the guest's toolchain drops the reason: componentize-js turns
every failed `fetch()` into "An error occurred while using the host API", whatever the error
says. An `err` or a trap of that call then carries the refusals its error does not name.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wasmtime import component as wc

if TYPE_CHECKING:
    from statefulmcp.wasm.policy import Policy


MAX_REFUSALS = 3
"""Refusals kept per call: a guest retrying in a loop must not grow an error without bound."""


def unsaid(refused: tuple[str, ...] | list[str], message: str) -> list[str]:
    """The refusals `message` does not name: it names one if it says "outgoing request to HOST refused"."""
    return [why for why in refused if why.partition(" refused")[0] + " refused" not in message]


def told(refused: tuple[str, ...] | list[str], message: str) -> str:
    """`message` followed by each refusal it does not already name, one a line."""
    missing = unsaid(refused, message)
    return "\n".join([message, *(f"The host refused during this call: {why}" for why in missing)])


@dataclass(slots=True)
class Running:
    """The calling instance: its component's name, its policy, and its Store's gate helper."""

    component: str
    policy: Policy
    gate: wc.Instance | None = None
    funcs: dict[str, Any] = field(default_factory=dict)
    """The gate helper's functions, looked up once per instance."""
    probed: bool = False
    """Set by the host's `handle` when the probe reaches it (see `http.link`)."""
    refused: list[str] = field(default_factory=list)
    """Why the host refused requests of the call in progress: distinct, at most `MAX_REFUSALS`."""

    def refuse(self, why: str) -> None:
        if why not in self.refused and len(self.refused) < MAX_REFUSALS:
            self.refused.append(why)


current: ContextVar[Running] = ContextVar("statefulmcp_wasm_running")
