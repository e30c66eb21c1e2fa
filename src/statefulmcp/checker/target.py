"""What the checker calls: a component file and the tools that make it a counter (and a register).

The contract a component must meet to be checked (the default, `workload.py`, meets it):

- a **counter** tool, keyed: `incr(key, by)` adds `by` (or one, if it takes no such argument)
  to the counter of `key`, durably, and returns the new value as an integer;
- a **count** tool, keyed: returns the counter of `key` (0 if never incremented);
- optionally a **register**: `put(key, value)` stores a string, `read(key)` returns the last
  one stored ("" if none). Without them, only counters are checked.

Every tool takes the key in the same argument (`key_arg`). `counter_state` and
`register_state` name the state entries that hold the values, if the verdict should read the
final values from `statefulmcp_state` (JSON) as well as through the tools.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from statefulmcp.checker.history import Kind

WORKLOAD = Path(__file__).with_name("workload.py")


@dataclass(frozen=True)
class Target:
    """The component under test and how to call it. The defaults describe `workload.py`."""

    component: Path = WORKLOAD
    name: str = "workload"
    """The component's name, as `list_components` and the audit tables spell it."""
    incr: str = "workload_incr"
    count: str = "workload_count"
    put: str | None = "workload_put"
    read: str | None = "workload_read"
    key_arg: str = "key"
    by_arg: str | None = "by"
    value_arg: str = "value"
    counter_state: str | None = "n"
    register_state: str | None = "value"

    @property
    def registers(self) -> bool:
        return self.put is not None and self.read is not None

    def arguments(self, kind: Kind, key: str, arg: int | str | None) -> tuple[str, dict[str, Any]]:
        """The tool and arguments of one call."""
        args: dict[str, Any] = {self.key_arg: key}
        if kind == "incr":
            if self.by_arg is not None:
                args[self.by_arg] = arg
            return self.incr, args
        if kind == "count":
            return self.count, args
        if kind == "put":
            assert self.put is not None
            args[self.value_arg] = arg
            return self.put, args
        assert self.read is not None
        return self.read, args
