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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from mcp import ClientSession
from mcp.shared.dispatcher import ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp_types import Result

from statefulmcp._errors import ToolCallError
from statefulmcp.cluster.membership import Membership
from statefulmcp.cluster.ownership import Claimed, Owner, Ownership
from statefulmcp.cluster.relay import RELAY, Relays
from statefulmcp.context import Context
from statefulmcp.remote import CallFailed, CallNotSent, RemotePool

log = logging.getLogger("statefulmcp.cluster")

__all__ = ["FORWARDED", "NOT_OWNER", "PROOF", "SESSION", "Cluster", "Elsewhere", "Hop", "NotOwner", "Send"]

FORWARDED = "statefulmcp/forwarded"
"""The `_meta` key of a forwarded call (its value: the sending replica's id)."""

PROOF = "statefulmcp/proof"
"""The `_meta` key of a forwarded call's proof that a replica sent it (see `Cluster.prove`)."""

NOT_OWNER = "statefulmcp/not-owner"
"""The `_meta` key of a forwarded call's answer when the replica it reached does not own the key
(in the error's `data` for a prompt or a resource, whose errors are JSON-RPC errors)."""

SESSION = "statefulmcp/session"
"""The `_meta` key of the session key a forwarded prompt get or resource read names (a tool call
names it in its arguments); proven like a tool call's, with `PROOF`."""

R = TypeVar("R", bound=Result)

Send = Callable[[ClientSession, dict[str, Any], ProgressFnT | None], Awaitable[R]]
"""Sends one request on a client session to the owner, with the `_meta` and progress callback
given: a tool call, a prompt get or a resource read."""

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


@dataclass(frozen=True, slots=True)
class Hop:
    """How a request reached this replica, from its `_meta` and headers: the replica that
    forwarded it (`FORWARDED`; then it is never forwarded again), that replica's `PROOF` of the
    session key it names (`SESSION`, for a prompt or a resource; a tool call names it in its
    arguments), and the caller's bearer token, passed on when the request must be forwarded."""

    forwarded: str | None = None
    token: str | None = None
    proof: str | None = None
    session_key: str | None = None


class NotOwner(ToolCallError):
    """A forwarded request reached a replica that cannot serve its key (it is not, or may no
    longer be, the owner): the forwarding replica routes it again."""


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
        self._pools: dict[asyncio.AbstractEventLoop, tuple[RemotePool, Relays]] = {}

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
        send: Send[R],
        *,
        token: str | None,
        context: Context,
        prove: str | None = None,
        answers: frozenset[int] = frozenset(),
    ) -> tuple[R | None, str]:
        """Send a request to the owner; (its result, "") or (None, why it could not be sent or
        served there).

        `prove`: a key the request names that only a replica may name, proven with `PROOF`.
        What the owner's tool logs and reports meanwhile reaches `context`, the original
        caller's, before this returns (`relay`). A result whose `_meta` says "not the owner"
        comes back as it is, and the caller decides; an error answer whose `data` says so comes
        back as (None, why). Other error answers with a code in `answers` are raised as they are.
        """
        url = where.owner.url
        if url is None:
            self.forget(where.component, where.key)
            return None, f"its owner, replica {where.owner.replica}, has no advertised address (--advertise)"
        loop = asyncio.get_running_loop()
        found = self._pools.get(loop)
        if found is None:
            relays = Relays()
            # Every level: the owner cannot know the original caller's filter, which applies here.
            pool = RemotePool(modern=True, log_level="debug", logging_callback=relays.log)
            found = self._pools[loop] = (pool, relays)
        pool, relays = found
        timeout = (self.call_seconds or 3600.0) + 5.0
        meta: dict[str, Any] = {FORWARDED: self.replica}
        if prove is not None:
            meta[PROOF] = self.prove(prove)
        with relays.open(context) as relay:
            if relay is not None:
                meta[RELAY] = relay[0]
            progress = relay[1].progress if relay is not None else None
            call = asyncio.ensure_future(
                pool.request(
                    url,
                    lambda session: send(session, meta, progress),
                    token=token,
                    timeout=timeout,
                    answers=answers,
                )
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
            except MCPError as exc:
                data = exc.error.data
                if isinstance(data, Mapping) and data.get(NOT_OWNER):
                    self.forget(where.component, where.key)
                    return None, exc.error.message
                raise
            if relay is not None:
                await relay[1].flush()
        if (result.meta or {}).get(NOT_OWNER):
            self.forget(where.component, where.key)
        return result, ""

    async def _while_alive(self, call: asyncio.Future[R], owner: Owner) -> R:
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
        found = self._pools.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].close()

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
