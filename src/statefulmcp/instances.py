"""`Instance`: one live object of a stateful component, and its turn.

Everything here runs on the engine loop. A turn is one tool call (or tick) on one instance:
acquire the instance -> run the body -> convert the reply -> commit the state -> release. Turns
of one instance are serialized by a FIFO lock held across every `await`, so two calls never
interleave on one instance while different instances run concurrently.

The reply is converted inside the turn (invariant 8): a tool that returns its own live list is
serialized before the next turn or tick can change it. The commit happens before the release and
before the reply (the output gate); a turn that raises is rolled back and commits nothing. Once
a commit is handed to the store, the turn's outcome is the commit's outcome: a cancellation that
arrives meanwhile waits for it, so memory and disk never disagree.

A background tick's commit is pipelined instead: the tick goes on while its commit is in
flight, and any later reply of the instance (which may have observed the tick's writes) waits
for it at its own commit point.

`wait_until` splits a turn in two at the wait, with the same commit at the split; so does
`away`, which a call uses while it waits for its client (an elicitation, a sampling request).
Both leave and come back through one path (`_leave`, `_reacquire`). Waiters and calls away are
failed at once when their instance is dropped (unload, replace, handle close), and a dropped
instance never commits again.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from statefulmcp._errors import (
    ActivationError,
    InstanceLost,
    StaleInstanceError,
    StatefulMCPError,
    StoreError,
    ToolCallError,
)
from statefulmcp.engine import outcome
from statefulmcp.state import Change, CommitChain
from statefulmcp.state.view import StateView
from statefulmcp.updates import MAX_ANNOUNCED, check_uri

if TYPE_CHECKING:
    from statefulmcp.background import Background
    from statefulmcp.live import LiveComponent

log = logging.getLogger("statefulmcp.instances")

R = TypeVar("R")

# The instances whose turns the current call path is inside, outermost first: a call that would
# need one of them again would wait on itself forever, so it is refused instead.
_held: contextvars.ContextVar[tuple[Instance, ...]] = contextvars.ContextVar("statefulmcp_held", default=())

# The wait-for graph across concurrent calls: each task waiting to acquire an instance -> that
# instance. With `Instance.holder` it closes the loop: task -> instance -> its holder -> ...
_waiting: dict[asyncio.Task[Any], Instance] = {}


MAX_PIPELINED = 64
"""Tick commits in flight per instance before a tick waits for its own: a stalled store must not
let ticks pile up change sets without a bound (the tick then falls behind and skips, counted)."""


def current() -> Instance | None:
    """The instance whose turn the running code is in (to gate its outbound calls), if any."""
    held = _held.get()
    return held[-1] if held else None


class Stale(Exception):
    """The instance a call waited for was dropped meanwhile (a trap, a close); route it again."""


@dataclass(slots=True)
class _Waiter:
    predicate: Callable[[], object]
    future: asyncio.Future[None]


def _same(value: Any) -> Any:
    return value


class Instance:
    """One live object of a stateful component, with the lock that serializes its turns."""

    __slots__ = (
        "activated",
        "activating",
        "announced",
        "away",
        "background",
        "chain",
        "dropped",
        "ending",
        "epoch",
        "generation",
        "going",
        "holder",
        "in_flight",
        "key",
        "last_used",
        "lock",
        "obj",
        "owner",
        "pending",
        "view",
        "waiters",
        "wake_scheduled",
    )

    def __init__(self, owner: LiveComponent, key: str | None) -> None:
        self.owner = owner
        self.key = key
        self.obj: Any = None
        self.lock = asyncio.Lock()
        self.holder: asyncio.Task[Any] | None = None
        self.activated = False
        self.activating = False
        self.dropped: str | None = None
        self.ending: str | None = None
        self.view = StateView(on_change=self._changed)
        self.waiters: list[_Waiter] = []
        self.away: set[asyncio.Future[Any]] = set()
        """What calls that released the turn to wait for their client are waiting for (`away`)."""
        self.background: Background | None = None
        self.pending: asyncio.Future[None] | None = None
        self.in_flight = 0
        self.chain = CommitChain()
        self.wake_scheduled = False
        self.epoch: int | None = None
        """The ownership epoch this instance was claimed under (with replicas); fences its commits."""
        self.generation = 0
        """The lease generation of this replica when the instance was claimed (see `Membership`)."""
        self.last_used = 0.0
        """`time.monotonic()` when a call last started or ended on it (idle passivation)."""
        self.going = False
        """Chosen for passivation (see `LiveComponent.passivate_soon`)."""
        self.announced: set[str] = set()
        """URIs the running turn said it updated (`resource_updated`), told once it commits."""

    @property
    def store_key(self) -> str:
        return "" if self.key is None else self.key

    @property
    def label(self) -> str:
        return self.owner.name if self.key is None else f"{self.owner.name}[{self.key!r}]"

    # -- the turn -----------------------------------------------------------------------------

    async def turn(
        self,
        body: Callable[[], Awaitable[Any]],
        finish: Callable[[Any], R] = _same,
        *,
        pipeline: bool = False,
    ) -> R:
        """Run `body` as one turn: activate first if needed, convert with `finish`, commit, release.

        `pipeline=True` (background ticks) hands the commit to the store without waiting for it.
        """
        held = _held.get()
        if self in held:
            chain = " -> ".join(i.label for i in held)
            raise ToolCallError(
                f"deadlock refused: this call would wait on its own instance ({chain} -> {self.label}); "
                "an instance cannot call a tool of itself, directly or through a cycle"
            )
        me = await self._acquire()
        token = _held.set((*held, self))
        try:
            if self.dropped is not None or self.ending is not None:
                raise Stale
            if not self.activated:
                await self._activate()
            elif self.epoch is not None:
                self._check_owned()
            try:
                value = finish(await body())
            except InstanceLost:
                self.owner.drop(self, "lost")
                raise
            except asyncio.CancelledError:
                if self.holder is me:
                    self._undo()
                if me.cancelling():
                    raise
                raise stray_cancel_error(self.owner.name) from None
            except BaseException as exc:
                # A call cancelled while parked in wait_until does not hold the turn: the writes
                # in the view then belong to whichever turn does, and are not ours to undo.
                if self.holder is me:
                    self._undo()
                if isinstance(exc, Exception):
                    raise
                raise exit_error(self.owner.name, exc) from None
            await self.commit(pipeline=pipeline, task=me)
            return value
        finally:
            _held.reset(token)
            self._release(me)

    def _check_owned(self) -> None:
        """Refuse a turn unless this replica's lease still holds (see `Membership.holds`).

        After a new lease generation the instance may have moved: it is dropped, and the call
        is routed again (claiming it afresh, or forwarding it to its new owner).
        """
        cluster = self.owner.cluster
        if cluster is None or cluster.holds(self.generation):
            return
        if self.generation != cluster.membership.generation:
            self.owner.drop(self, "dropped: this replica's lease expired, so the instance may have moved")
            raise Stale
        raise cluster.refuse_unleased(self.label)

    async def _acquire(self) -> asyncio.Task[Any]:
        me = asyncio.current_task()
        assert me is not None
        self._refuse_cycle(me)
        _waiting[me] = self
        try:
            await self.lock.acquire()
        finally:
            del _waiting[me]
        self.holder = me
        return me

    def _refuse_cycle(self, me: asyncio.Task[Any]) -> None:
        """Refuse a wait that would close a cycle: me -> this -> its holder -> ... -> me."""
        if self.holder is None:
            return
        chain = [self]
        task: asyncio.Task[Any] | None = self.holder
        while task is not None and len(chain) < 1000:
            if task is me:
                path = " -> ".join(i.label for i in chain)
                raise ToolCallError(
                    f"deadlock refused: this call holds an instance that another call waits for, and would "
                    f"wait for that call in turn ({path} -> back to this call). Instances that call each "
                    "other's tools must not do so from inside both turns at once"
                )
            nxt = _waiting.get(task)
            if nxt is None:
                return
            chain.append(nxt)
            task = nxt.holder

    async def acquire_for_end(self) -> None:
        """Take the turn to deactivate: after the current turn (queued calls are refused)."""
        await self._acquire()

    def release_after_end(self) -> None:
        self._release()

    def _release(self, me: asyncio.Task[Any] | None = None) -> None:
        """End the current task's hold on the turn (if it has one) and wake satisfied waiters."""
        if self.holder is not (me or asyncio.current_task()) or not self.lock.locked():
            return
        self.holder = None
        self._wake()
        self.lock.release()

    # -- commits ------------------------------------------------------------------------------

    async def commit(self, *, pipeline: bool = False, task: asyncio.Task[Any] | None = None) -> None:
        """Make the turn's writes durable (or wait for earlier pipelined ones) before the reply.

        Once they are, the resources they updated are told (`updates`): never before, and not
        for a turn that wrote nothing (unless it announced a URI itself).
        `task` is the caller's own task when it already has it (saves a lookup on the hot path).
        """
        view = self.view
        if not view.dirty:
            if self.pending is not None:
                await self.gate()
            if self.announced:
                self._updated(changed=False)
            return
        me = task or asyncio.current_task()
        if self.dropped is not None or self.holder is not me:
            if self.holder is me:
                self._undo()
            reason = self.dropped or self.ending or "released"
            raise ToolCallError(
                f"{self.label} was {reason} while this call ran; nothing it wrote after that was kept"
            )
        store = self.owner.store
        if store is None:
            view.accept()
            self._updated()
            return
        try:
            names = view.changes()
        except BaseException:
            self._undo()
            raise
        # Chained while a tick's commit may still be in flight: this turn may have seen its writes.
        chain = self.chain if pipeline or self.pending is not None else None
        commit = store.commit([Change(self.owner.name, self.store_key, names, self.epoch)], chain=chain)
        if pipeline and self.in_flight < MAX_PIPELINED:
            view.accept()
            announced, self.announced = self.announced, set()
            self._pipeline(asyncio.ensure_future(commit), announced)
            return
        try:
            await commit  # cancellation-safe: it returns the commit's outcome (see `Store.commit`)
        except StaleInstanceError:
            self._undo()
            self.owner.drop(self, "dropped: its commit was fenced or in doubt")
            raise
        except BaseException:
            self._undo()
            raise
        view.accept()
        self._updated()
        if self.pending is not None:
            await self.gate()

    def _undo(self) -> None:
        """Roll the turn back: its writes, and what it announced, never happened."""
        self.view.rollback()
        self.announced.clear()

    def _updated(self, *, changed: bool = True, announced: set[str] | None = None) -> None:
        """A commit landed: tell the component which of its resources it updated."""
        if announced is None:
            announced = self.announced
            if announced:  # a fresh set only when the turn announced something (the hot path does not)
                self.announced = set()
        self.owner.committed(self.key, announced, changed=changed)

    def resource_updated(self, uri: str) -> None:
        """Say that the resource at `uri` changed; subscribers hear it once this turn commits.

        Bound to each instance as `self.resource_updated(uri)`, for resources the host cannot
        tell are updated by itself (a template with parameters besides the key, data outside
        `self.state`). A turn that raises announces nothing.
        """
        uri = check_uri(uri)
        if uri not in self.announced and len(self.announced) >= MAX_ANNOUNCED:
            raise ToolCallError(
                f"{self.label}: one turn may announce at most {MAX_ANNOUNCED} updated resources; announce "
                "fewer (subscribers reread what they watch), or split the work over several turns"
            )
        self.announced.add(uri)

    def _pipeline(self, future: asyncio.Future[None], announced: set[str]) -> None:
        """Chain a tick's in-flight commit after the earlier ones; a failure drops the instance.

        Memory has moved on past a write the store refused, so the only truthful state left is
        the store's: the instance is dropped and the next call activates it from there.
        """
        previous = self.pending
        future.add_done_callback(_retrieved)  # a failure before it is acted on by an earlier one

        async def chained() -> None:
            if previous is not None:
                await previous
            try:
                await future
            except StatefulMCPError as exc:
                log.error("a background commit of %s failed (%s); dropping the instance", self.label, exc)
                self.owner.drop(self, "dropped after a failed background commit")
                raise
            self._updated(announced=announced)

        pending = asyncio.ensure_future(chained())
        self.in_flight += 1
        pending.add_done_callback(_retrieved)
        self.pending = pending
        pending.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[None]) -> None:
        self.in_flight -= 1
        if self.pending is future:
            self.pending = None

    async def gate(self) -> None:
        """Wait until every pipelined commit this turn may have observed is durable."""
        pending = self.pending
        if pending is None:
            return
        try:
            await outcome(pending)
        except StatefulMCPError as exc:
            raise StoreError(
                f"a background write of {self.label} could not be made durable ({exc}); this reply "
                "observed it, so it is withdrawn. Retry: the instance restarts from its durable state"
            ) from None

    # -- waits --------------------------------------------------------------------------------

    def _changed(self) -> None:
        """A write to `self.state` by any path (a turn, a plain loop): re-check waiters soon."""
        if self.waiters and not self.wake_scheduled:
            self.wake_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self.wake_scheduled = False
        for waiter in self.waiters:
            if waiter.future.done():
                continue
            try:
                ready = waiter.predicate()
            except Exception as exc:  # noqa: BLE001 - the predicate's error is the waiter's answer
                waiter.future.set_exception(exc)
                continue
            if ready:
                waiter.future.set_result(None)

    async def wait_until(self, predicate: Callable[[], object], timeout: float | None = None) -> None:
        """Release the turn until `predicate()` holds, then take it back (see the module docs).

        Bound to each instance as `self.wait_until(predicate, timeout=...)`.
        """
        if self.activating:
            raise RuntimeError(
                "wait_until cannot be used in on_activate: other calls would run mid-activation"
            )
        if predicate():
            return
        limit = self.owner.max_waiters
        if limit is not None and len(self.waiters) >= limit:
            raise ToolCallError(
                f"{self.label} already has {limit} calls waiting (--max-waiters / Host(max_waiters=...)); "
                "retry later, or raise the bound"
            )
        await self._leave("wait_until")
        waiter = _Waiter(predicate, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await waiter.future
                    await self._reacquire()
                    if predicate():
                        return
                    waiter.future = asyncio.get_running_loop().create_future()
                    self._release()
        except TimeoutError:
            await self._reacquire()
            if predicate():  # the last word is the deadline's: a change nobody announced counts
                return
            raise TimeoutError(
                f"wait_until timed out after {timeout:g} s; the condition never held"
            ) from None
        finally:
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    async def _leave(self, what: str) -> None:
        """Split the turn: commit what it wrote so far, then release the instance.

        The first half is then a turn like any other (durable, visible to the calls that run
        next); the caller takes the turn back with `_reacquire` as a new turn.
        """
        if self.activating:
            raise RuntimeError(f"{what} cannot be used in on_activate: other calls would run mid-activation")
        if self.holder is not asyncio.current_task():
            raise RuntimeError(f"{what} can only be awaited inside a tool call or tick of this instance")
        await self.commit()
        self._release()

    async def away_for(self, what: str, start: Callable[[], asyncio.Future[R]]) -> R:
        """Release the turn while what `start` begins is awaited (a question to the caller's
        client), then take the turn back as a new turn, exactly as `wait_until` does.

        `start` is called once the first half is committed and the instance released, so nothing
        reaches the client before the writes it may have seen are durable. A call that does not
        hold the turn (a plain background loop) just waits. When the instance is dropped
        meanwhile, the wait fails at once with the reason, so the call ends instead of waiting
        for a client whose answer could no longer be kept.
        """
        held = self.holder is asyncio.current_task()
        if held:
            await self._leave(what)
        answer = start()
        self.away.add(answer)
        if self.dropped is not None or self.ending is not None:
            self._fail_away(answer)  # dropped while the first half committed
        try:
            value = await answer
        finally:
            self.away.discard(answer)
        if held:
            await self._reacquire()
        return value

    async def _reacquire(self) -> None:
        if self.dropped is None and self.ending is None:
            await self._acquire()
        reason = self.dropped or self.ending
        if reason is not None:
            self._release()
            raise ToolCallError(
                f"{self.label} was {reason} while this call waited; the call was ended and nothing "
                "it writes from now on is kept"
            )

    def fail_waiters(self) -> None:
        """Wake every parked waiter, and fail every call away, with the reason this instance was dropped."""
        for waiter in self.waiters:
            if not waiter.future.done():
                waiter.future.set_result(None)  # `_reacquire` sees `dropped` and raises
        for answer in self.away:
            self._fail_away(answer)

    def _fail_away(self, answer: asyncio.Future[Any]) -> None:
        if not answer.done():
            answer.set_exception(
                ToolCallError(
                    f"{self.label} was {self.dropped or self.ending} while this call waited for its client; "
                    "the call was ended and nothing it writes from now on is kept"
                )
            )

    # -- activation ---------------------------------------------------------------------------

    async def _activate(self) -> None:
        """Load state, build the object, run `on_activate`, commit, start background work."""
        owner = self.owner
        try:
            if owner.cluster is not None:
                self.epoch, self.generation = await owner.cluster.claim(
                    owner.name, self.store_key, self.label
                )
            if owner.store is not None:
                self.view = StateView.from_rows(
                    await owner.store.load(owner.name, self.store_key), on_change=self._changed
                )
            self.obj = owner.new_object(self)
            self.activating = True
            try:
                await owner.call_user(getattr(self.obj, "on_activate", None))
            except (asyncio.CancelledError, StatefulMCPError):
                raise
            except Exception as exc:
                raise ActivationError(
                    f"on_activate of {owner.name}/{self.store_key or '(singleton)'} failed: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            finally:
                self.activating = False
            await self.commit()
        except BaseException:
            self._undo()
            owner.drop(self, "dropped after a failed activation")
            raise
        self.activated = True
        owner.start_background(self)


def exit_error(component: str, exc: BaseException) -> ToolCallError:
    """The error for user code raising a `BaseException` that is not an `Exception`: `SystemExit`
    (argparse in a tool raises it), `KeyboardInterrupt`, `GeneratorExit`.

    Left alone, any of them would stop the engine thread or the transport's tasks; it fails that
    call only.
    """
    if isinstance(exc, SystemExit | KeyboardInterrupt):
        why = "that would stop a program"
    else:
        why = "it is not an Exception, and passed on it would end the server's own tasks"
    return ToolCallError(
        f"{component}: user code raised {type(exc).__name__}({exc}); {why}, so this call failed "
        "instead. Raise an ordinary exception to report an error"
    )


def stray_cancel_error(component: str) -> ToolCallError:
    """The error for user code raising `CancelledError` in a call nobody cancelled.

    Awaiting a task that something else cancelled does this. Passed on as a cancellation, it
    would end the call with no answer, and the MCP SDK then ends the caller's whole session.
    """
    return ToolCallError(
        f"{component}: user code raised CancelledError, but this call was not cancelled (did it await "
        "a task that was cancelled?); the call failed instead. Raise an ordinary exception to report "
        "an error"
    )


def cancel_requested() -> bool:
    """True when someone asked to cancel the running task (so a `CancelledError` is theirs)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a pipelined commit's failure as seen (it is logged and acted on in `chained`)."""
    if not future.cancelled():
        future.exception()
