"""Durable test components: a keyed ledger, hooks that write, and an eagerly activated one."""

import asyncio
import os
from pathlib import Path

from statefulmcp import Stateful, component, tool

STARTED: list[str] = []
"""Accounts whose gated deposit has started (read through `probe_started`, a stateless tool)."""


async def until_exists(gate: Path) -> None:
    """Park until the test creates `gate`: the test decides when slow work ends, not a guessed sleep.

    A file, not a tool call, because the test opens it while the server refuses new calls (drain).
    """
    while not await asyncio.to_thread(gate.exists):
        await asyncio.sleep(0.01)


@component(stateful=True, key="account")
class Ledger(Stateful):
    balance: int

    async def on_activate(self) -> None:
        self.balance = self.state.get("balance", 0)

    @tool
    async def deposit(self, account: str, amount: int) -> int:
        self.balance += amount
        self.state["balance"] = self.balance
        return self.balance

    @tool
    async def balance_of(self, account: str) -> int:
        return self.balance

    @tool
    async def deposit_then_fail(self, account: str, amount: int) -> int:
        self.state["balance"] = self.balance + amount
        raise RuntimeError("failed after writing")

    @tool
    async def store_bad_value(self, account: str) -> int:
        self.state["balance"] = self.balance + 1
        self.state["when"] = {1, 2, 3}
        return 0

    @tool
    async def store_blob(self, account: str, size: int) -> int:
        self.state["blob"] = "x" * size
        return size

    @tool
    async def gated_deposit(self, account: str, amount: int, gate: str) -> int:
        """A deposit held in flight until the file `gate` exists."""
        STARTED.append(account)
        await until_exists(Path(gate))
        self.balance += amount
        self.state["balance"] = self.balance
        return self.balance

    async def on_deactivate(self) -> None:
        self.state["deactivated"] = True

    @tool
    async def was_deactivated(self, account: str) -> bool:
        return bool(self.state.get("deactivated", False))


@component
class Probe:
    @tool
    async def started(self) -> int:
        return len(STARTED)


@component(stateful=True, key="sensor", activate="eager")
class Sensor(Stateful):
    balance: int

    async def on_activate(self) -> None:
        """A slow recovery, held until the file `$SENSOR_GATE` exists (when set): /ready must wait."""
        gate = os.environ.get("SENSOR_GATE")
        if gate:
            await until_exists(Path(gate))
        self.readings = list(self.state.get("readings", []))
        self.state["activations"] = self.state.get("activations", 0) + 1

    @tool
    async def record(self, sensor: str, value: float) -> int:
        self.readings.append(value)
        self.state["readings"] = self.readings
        return len(self.readings)

    @tool
    async def activations(self, sensor: str) -> int:
        return int(self.state["activations"])
