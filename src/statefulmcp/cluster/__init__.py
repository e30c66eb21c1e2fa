"""Scale-out: several replicas on one PostgreSQL, exactly one owner per instance at a time.

`Cluster` ties the parts together for the host: this replica's lease (`membership`), claims with
epochs (`ownership`), and forwarding a call to the replica that owns its instance (here). The
rules, in the order a call meets them:

1. A call for an instance that is live here runs here, if this replica's lease still holds
   (`Membership.holds`); otherwise it is refused with a "retry" error before it starts.
2. A call for an instance not live here claims it: this replica becomes its owner (a new epoch)
   and activates it from the store, or learns which live replica owns it and raises `Elsewhere`.
3. The host forwards an `Elsewhere` call to the owner, one hop at most: a forwarded call that
   finds its instance owned by yet another replica answers "not the owner", and the forwarding
   replica forgets what it knew, claims again and tries once more.
4. Every commit is fenced by the epoch its instance was activated under (`state/postgres.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any

from mcp_types import CallToolResult

from statefulmcp._errors import ToolCallError
from statefulmcp.cluster.membership import Membership
from statefulmcp.cluster.ownership import Claimed, Owner, Ownership
from statefulmcp.remote import CallFailed, CallNotSent, RemotePool

log = logging.getLogger("statefulmcp.cluster")

__all__ = ["FORWARDED", "NOT_OWNER", "PROOF", "Cluster", "Elsewhere"]

FORWARDED = "statefulmcp/forwarded"
"""The `_meta` key of a forwarded call (its value: the sending replica's id)."""

PROOF = "statefulmcp/proof"
"""The `_meta` key of a forwarded call's proof that a replica sent it (see `Cluster.prove`)."""

NOT_OWNER = "statefulmcp/not-owner"
"""The `_meta` key of a forwarded call's answer when the replica it reached does not own the key."""

DEFAULT_LEASE_SECONDS = 2.0

OWNER_CACHE = 100_000
"""Owners of other replicas' keys remembered at most (each saves one claim per forwarded call)."""


class Elsewhere(Exception):
    """The instance a call needs is owned by another live replica."""

    def __init__(self, component: str, key: str, owner: Owner) -> None:
        super().__init__(f"{component}[{key!r}] is owned by replica {owner.replica}")
        self.component = component
        self.key = key
        self.owner = owner


class _OwnerLost(Exception):
    """The owner of a forwarded call stopped renewing its lease before it answered."""


class Cluster:
    """This replica's membership, claims, owner cache and forwarding."""

    def __init__(self, url: str, *, advertise: str | None, lease: float, call_seconds: float | None) -> None:
        self.membership = Membership(url, advertise=advertise, lease=lease, on_new_life=self._new_life)
        self.ownership = Ownership(url, self.membership.id)
        self.call_seconds = call_seconds
        self.elsewhere: dict[tuple[str, str], Owner] = {}
        """Owners learned from claims: calls for these keys are forwarded without asking again."""
        self.on_new_life: list[Any] = []
        self._pools: dict[asyncio.AbstractEventLoop, RemotePool] = {}

    @property
    def replica(self) -> str:
        return self.membership.id

    def start(self) -> None:
        self.membership.start()

    async def set_address(self, url: str) -> None:
        """Where the other replicas forward calls for this replica's keys (set once bound)."""
        self.membership.advertise = url
        await self.ownership.set_url(url)

    def _new_life(self) -> None:
        self.elsewhere.clear()
        for hook in self.on_new_life:
            hook()

    # -- claims (engine loop) -----------------------------------------------------------------

    def holds(self, generation: int) -> bool:
        return self.membership.holds(generation)

    def refuse_unleased(self, label: str) -> ToolCallError:
        return ToolCallError(
            f"replica {self.replica} cannot renew its lease in the database, so it may not own {label} "
            "any more and serves no instance until it can; retry the call (on another replica if you can)"
        )

    async def claim(self, component: str, key: str, label: str) -> tuple[int, int]:
        """Own `(component, key)` now: returns (epoch, generation), or raises `Elsewhere`."""
        known = self.elsewhere.get((component, key))
        if known is not None:
            raise Elsewhere(component, key, known)
        if not self.membership.valid():
            raise self.refuse_unleased(label)
        generation = self.membership.generation
        result = await self.ownership.claim(component, key)
        if isinstance(result, Claimed):
            if not self.membership.holds(generation):
                raise self.refuse_unleased(label)
            return result.epoch, generation
        if isinstance(result, Owner):
            if len(self.elsewhere) >= OWNER_CACHE:  # the oldest goes: a miss only costs a claim
                del self.elsewhere[next(iter(self.elsewhere))]
            self.elsewhere[(component, key)] = result
            raise Elsewhere(component, key, result)
        raise self.refuse_unleased(label)

    def prove(self, what: str) -> str:
        """A replica's proof that it sent `what` (an instance key only replicas may name, such as
        a session's): an HMAC under the secret every replica reads from the database. A client
        can set the forwarded marker, but not this."""
        return hmac.new(
            self.membership.secret, what.encode("utf-8", "surrogatepass"), hashlib.sha256
        ).hexdigest()

    def proven(self, what: str, proof: object) -> bool:
        return isinstance(proof, str) and hmac.compare_digest(self.prove(what), proof)

    def forget(self, component: str, key: str) -> None:
        self.elsewhere.pop((component, key), None)

    # -- forwarding (any loop) ----------------------------------------------------------------

    async def forward(
        self,
        where: Elsewhere,
        name: str,
        arguments: dict[str, Any],
        *,
        token: str | None,
        prove: str | None = None,
    ) -> tuple[CallToolResult | None, str]:
        """Send the call to the owner; (its result, "") or (None, why it could not be sent).

        `prove`: a key the call names that only a replica may name, proven with `PROOF`. A
        result whose `_meta` says "not the owner" comes back as it is; the caller decides.
        """
        url = where.owner.url
        if url is None:
            self.forget(where.component, where.key)
            return None, f"its owner, replica {where.owner.replica}, has no advertised address (--advertise)"
        pool = self._pools.get(asyncio.get_running_loop())
        if pool is None:
            pool = self._pools[asyncio.get_running_loop()] = RemotePool(modern=True)
        timeout = (self.call_seconds or 3600.0) + 5.0
        meta = {FORWARDED: self.replica}
        if prove is not None:
            meta[PROOF] = self.prove(prove)
        call = asyncio.ensure_future(
            pool.call_tool(url, name, arguments, token=token, timeout=timeout, meta=meta)
        )
        try:
            result = await self._while_alive(call, where.owner)
        except CallNotSent as exc:
            self.forget(where.component, where.key)
            if exc.refused is not None:  # routing again would only be refused again
                raise ToolCallError(
                    f"the replica that owns {where.component}[{where.key!r}] ({url}) refused the caller's "
                    f"token ({exc.refused}); every replica must accept the same tokens (the same "
                    "--auth-token-file, or the same verifier)"
                ) from None
            return None, f"its owner at {url} cannot be reached ({exc})"
        except (CallFailed, TimeoutError, _OwnerLost) as exc:
            self.forget(where.component, where.key)
            raise ToolCallError(
                f"the replica that owns {where.component}[{where.key!r}] ({url}) failed during the call "
                f"({exc or 'timed out'}); the call may or may not have taken effect. Retry it if that is safe"
            ) from None
        meta = result.meta or {}
        if meta.get(NOT_OWNER):
            self.forget(where.component, where.key)
        return result, ""

    async def _while_alive(self, call: asyncio.Future[CallToolResult], owner: Owner) -> CallToolResult:
        """Wait for a forwarded call while its owner's lease holds; a stopped or cut-off owner
        would otherwise hold the caller until the call's time limit."""
        try:
            while True:
                done, _ = await asyncio.wait({call}, timeout=self.membership.lease)
                if done:
                    return call.result()
                if not await self.ownership.alive(owner.replica):
                    raise _OwnerLost(f"replica {owner.replica} lost its lease while the call was forwarded")
        finally:
            if not call.done():
                call.cancel()
                # Shielded: a caller's cancel scope cancels us again and again; passed on, each one
                # would cancel the SDK client mid-abandon, before it aborts the request to the owner.
                await asyncio.shield(asyncio.gather(call, return_exceptions=True))

    async def close_pool(self) -> None:
        """Close this loop's forwarding connections (call on each loop that forwarded)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    # -- leaving --------------------------------------------------------------------------------

    async def release_all(self) -> None:
        """Hand every key over at once (after the last commit): others claim without waiting."""
        started = time.monotonic()
        try:
            count = await self.ownership.release_all()
            log.info("released %d keys in %.0f ms", count, (time.monotonic() - started) * 1000)
        except Exception as exc:  # noqa: BLE001 - leaving anyway: the lease expires by itself
            log.warning("could not release this replica's keys (%s); they move when its lease expires", exc)

    def close(self) -> None:
        self.membership.stop()
        self.ownership.close()
