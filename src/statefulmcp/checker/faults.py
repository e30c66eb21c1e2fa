"""The faults, each one injected under load at a moment the run's random generator picks.

Every fault follows the same steps: pick a victim that owns busy keys (waiting until it does),
let a random number of further calls be acknowledged (that is the random timing: where within
the load the fault lands), note the keys the victim owns and the instant, strike, wait until one
of those keys answers again through the cluster, repair, and start a new phase of keys so that
every replica, the repaired one too, owns busy keys for the next fault.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import time
from collections.abc import Awaitable, Callable

from statefulmcp.checker.rig import NotReached, Rig, until
from statefulmcp.checker.verdict import FaultEvent

log = logging.getLogger("statefulmcp.checker")

Fault = Callable[[Rig, random.Random], Awaitable[None]]


async def _land(rig: Rig, rng: random.Random) -> None:
    """The random part: the fault strikes after 10 to 80 more acknowledgements."""
    await rig.acknowledgements(rng.randint(10, 80))


def _note(rig: Rig, kind: str, victim: str, keys: set[str]) -> FaultEvent:
    event = FaultEvent(kind, victim, time.monotonic(), frozenset(keys))
    rig.faults.append(event)
    log.info(
        "%s of %s (owner of %s) after %d calls", kind, victim, ", ".join(sorted(keys)), len(rig.history.calls)
    )
    return event


async def _next_phase(rig: Rig) -> None:
    assert rig.load is not None
    await rig.load.new_phase()


async def kill(rig: Rig, rng: random.Random) -> None:
    """kill -9 of an owner of busy keys; a new replica takes its place once its keys answer again."""
    victim = rng.choice(rig.replicas)
    await rig.busy(victim)
    await _land(rig, rng)
    assert rig.load is not None
    keys = await rig.owned(victim, rig.load.hot)
    victim.send(signal.SIGKILL)
    event = _note(rig, "kill", victim.name, keys)
    await asyncio.to_thread(victim.proc.wait)
    rig.remove(victim)
    await rig.recovered(event)
    await rig.start_replica()
    await _next_phase(rig)


async def stop(rig: Rig, rng: random.Random) -> None:
    """SIGSTOP of an owner until another replica has taken one of its keys over and served it,
    and a little more; then SIGCONT. The zombie must commit nothing and stop serving them."""
    victim = rng.choice(rig.replicas)
    await rig.busy(victim)
    await _land(rig, rng)
    assert rig.load is not None
    keys = await rig.owned(victim, rig.load.hot)
    victim.send(signal.SIGSTOP)
    event = _note(rig, "stop", victim.name, keys)
    try:
        await until(
            lambda: rig.claimed_elsewhere(keys, victim),
            rig.patience,
            "a stopped owner's key moving",
        )
        await rig.recovered(event)
        await rig.acknowledgements(rng.randint(0, 40))
    finally:
        victim.send(signal.SIGCONT)
    await until(lambda: rig.leased(victim), rig.patience, f"{victim.name} renewing its lease after SIGCONT")
    await _next_phase(rig)


async def cut(rig: Rig, rng: random.Random) -> None:
    """The proxied replica cut off from PostgreSQL while its clients still reach it, until
    another replica has taken one of its keys over and served it; then the link heals."""
    victim = rig.replicas[0]
    proxy = rig.proxy
    if proxy is None:
        raise NotReached("the cut fault needs the rig's first replica behind the proxy")
    await rig.busy(victim)
    await _land(rig, rng)
    assert rig.load is not None
    keys = await rig.owned(victim, rig.load.hot)
    await asyncio.to_thread(proxy.cut)
    event = _note(rig, "cut", victim.name, keys)
    try:
        await until(
            lambda: rig.claimed_elsewhere(keys, victim),
            rig.patience,
            "a cut-off owner's key moving",
        )
        await rig.recovered(event)
        await rig.acknowledgements(rng.randint(0, 40))
    finally:
        proxy.heal()
    await until(lambda: rig.leased(victim), rig.patience, f"{victim.name} renewing its lease after the cut")
    await _next_phase(rig)


async def pg_restart(rig: Rig, rng: random.Random) -> None:
    """PostgreSQL restarted (fast shutdown: connections cut, open transactions rolled back) under load."""
    server = rig.server
    if server is None:
        raise NotReached("the pg-restart fault needs a way to restart PostgreSQL (--pg-restart-command)")
    await rig.busy(rng.choice(rig.replicas))
    await _land(rig, rng)
    assert rig.load is not None
    event = _note(rig, "pg-restart", "postgresql", set(rig.load.hot))
    await asyncio.to_thread(server.restart)
    await rig.recovered(event)
    await _next_phase(rig)


async def rolling(rig: Rig, rng: random.Random) -> None:
    """A rolling restart: each replica in turn gets SIGTERM (hand-off), then a new one starts."""
    for victim in list(rig.replicas):
        await rig.busy(victim)
        await _land(rig, rng)
        assert rig.load is not None
        keys = await rig.owned(victim, rig.load.hot)
        event = _note(rig, "rolling", victim.name, keys)
        await asyncio.to_thread(victim.stop, signal.SIGTERM)  # one signal: a second one forces an exit
        rig.remove(victim)
        await rig.recovered(event)
        await rig.start_replica()
        await _next_phase(rig)


FAULTS: dict[str, Fault] = {
    "kill": kill,
    "stop": stop,
    "cut": cut,
    "pg-restart": pg_restart,
    "rolling": rolling,
}
"""The faults by the name `--fault` takes."""
