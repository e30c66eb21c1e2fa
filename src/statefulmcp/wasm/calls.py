"""The WebAssembly instance whose call runs on this thread, for host functions that act for it.

`wasi:http` and `wasi:config` are host functions defined once per loaded component, but what they
may do depends on the instance calling them: the policy it was made under, and the gate helper
in its Store. wasmtime hands a host function only a store context, so each instance says who it
is for the length of each call into it (calls to one instance never overlap, and a host
function runs on the calling thread).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wasmtime import component as wc

if TYPE_CHECKING:
    from statefulmcp.wasm.policy import Policy


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


current: ContextVar[Running] = ContextVar("statefulmcp_wasm_running")
