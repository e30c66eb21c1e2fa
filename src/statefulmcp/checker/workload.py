"""The checker's default workload: keyed counters and keyed registers, durable every turn.

Served by the replicas the checker starts (`statefulmcp serve .../workload.py`), so it is a
component file like any other: it imports only the public API. Every key is one instance; the
checker uses some keys as counters and others as registers, never one key as both. Counters
return the new count, so every acknowledged increment names the value it produced: that is what
lets the verdict prove that no acknowledged increment was lost or applied twice. Register values
are unique per write, so a read names the write it saw.

State names: the count is `n`, the register `value` (JSON in `statefulmcp_state`); the verdict
reads them from the database as the final values.
"""

from statefulmcp import Stateful, component, tool


@component(stateful=True, key="key")
class Workload(Stateful):
    """One counter and one register per key.

    Every value is read from `self.state`, never kept in an attribute: a turn whose commit fails
    has its `self.state` writes rolled back, but not attributes, so a copy in an attribute would
    run ahead of the database and answer reads with increments that were never written (the
    checker catches that: the counter would go back once the key moves).
    """

    @tool
    async def incr(self, key: str, by: int = 1) -> int:
        """Add `by` to the counter `key` and return the new count."""
        n = int(self.state.get("n", 0)) + by
        self.state["n"] = n
        return n

    @tool
    async def count(self, key: str) -> int:
        """The counter `key` (0 if it was never incremented)."""
        return int(self.state.get("n", 0))

    @tool
    async def put(self, key: str, value: str) -> str:
        """Set the register `key` to `value`; returns `value`."""
        self.state["value"] = value
        return value

    @tool
    async def read(self, key: str) -> str:
        """The register `key` ("" if it was never written)."""
        return str(self.state.get("value", ""))
