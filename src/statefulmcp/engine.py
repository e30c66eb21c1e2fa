"""The engine thread and the bridge into it.

Stateful instances live on one dedicated thread running its own asyncio loop, so their state is
only ever touched from one thread and user code never deals with threads or locks. The
transport (or any other caller) runs on another loop and hands work over through the bridge.

The bridge is on the hot path of every stateful call, so it batches: a burst of calls from one
side costs one wake-up of the other side (one `call_soon_threadsafe`, one self-pipe write), not
one per call. `_Mailbox` is that batching queue, one per event loop (`mailbox(loop)`): the
engine's inbox, and the way back into each caller loop. It is the only way work crosses threads
here: the bridge posts through it both ways, and the SQLite writer thread answers commits through it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import heapq
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

import uvloop

log = logging.getLogger("statefulmcp.engine")

T = TypeVar("T")


class _Mailbox:
    """A queue of callbacks into one event loop, drained in batches.

    `post` may be called from any thread. Only the first post after a drain schedules a drain,
    so N posts in a burst cost one cross-thread wake-up.
    """

    __slots__ = ("_items", "_lock", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        self._items.append((fn, args))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            self._scheduled = False
        items = self._items
        while items:
            fn, args = items.popleft()
            try:
                fn(*args)
            except Exception:  # one bad callback must not strand the rest of the batch
                log.exception("engine callback failed")


_mailboxes: WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = WeakKeyDictionary()
_mailboxes_lock = threading.Lock()


def mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    """The one mailbox into `loop`, made on first use and gone with the loop.

    One per loop, not one per sender: replies from the writer thread and calls from the transport
    that reach the engine together are drained by the same wake-up.
    """
    box = _mailboxes.get(loop)
    if box is None:
        with _mailboxes_lock:
            box = _mailboxes.get(loop)
            if box is None:
                box = _mailboxes[loop] = _Mailbox(loop)
    return box


class Engine:
    """Owns the engine thread and its loop, the precise clock, the deadline sweeper and the watchdog.

    Everything it starts it also stops: after `stop()` no thread or task of the engine remains
    (a sync tool body that never returns keeps its worker thread, which Python cannot kill; the
    watchdog reports such bodies while they run).
    """

    def __init__(self, *, workers: int = 32, stall_seconds: float = 2.0) -> None:
        self.loop = uvloop.new_event_loop()
        self._inbox = mailbox(self.loop)
        self._thread = threading.Thread(target=self._run, name="statefulmcp-engine", daemon=True)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="statefulmcp-sync"
        )
        self.workers = workers
        self.calls = 0
        """Calls from other threads running on the engine now (touched on the engine thread only)."""
        # User code's own `asyncio.to_thread` gets threads apart from those of sync bodies: offloaded
        # work that hangs must not take the threads every component's sync tools are bounded on.
        self.offload_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="statefulmcp-sync-offload"
        )
        self.loop.set_default_executor(self.offload_pool)
        # WebAssembly calls have deadlines and always return; they get threads user code cannot take.
        self.wasm_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, 2 * (os.cpu_count() or 1)), thread_name_prefix="statefulmcp-wasm"
        )
        self.clock = _Clock()
        self.deadlines = Deadlines()
        self.watchdog = _Watchdog(self, stall_seconds)
        self._stopped = True

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        while True:
            try:
                self.loop.run_forever()
                return
            except (SystemExit, KeyboardInterrupt) as exc:
                # A task user code started itself (not a call, which fails on its own) raised it:
                # asyncio lets it out of the loop, and the engine thread would end for everyone.
                log.error(
                    "a task started by user code on the engine loop raised %s(%s); ignored, the engine "
                    "goes on. Raise an ordinary exception to report an error",
                    type(exc).__name__,
                    exc,
                )

    def start(self) -> None:
        self._thread.start()
        self._stopped = False
        self.watchdog.start()

    def on_engine(self) -> bool:
        """True when the caller runs on the engine thread."""
        return threading.get_ident() == self._thread.ident

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel and await whatever still runs on the engine loop, then stop every thread."""
        self._stopped = True
        self.watchdog.stop()
        self.clock.stop()
        self.wasm_pool.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.offload_pool.shutdown(wait=False, cancel_futures=True)
            return

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(timeout)
        except (TimeoutError, concurrent.futures.TimeoutError):
            log.error("engine tasks did not stop within %.1f s; stopping the loop anyway", timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.offload_pool.shutdown(wait=False, cancel_futures=True)
        if not self._thread.is_alive():
            self.loop.close()

    async def sleep_until(self, when: float) -> None:
        """Sleep on the engine loop until `time.perf_counter()` reaches `when`, to tens of µs."""
        if when - time.perf_counter() > 0.01:
            # The bulk of a long wait goes to the loop's own timer; only the end needs precision.
            await asyncio.sleep(when - time.perf_counter() - 0.005)
        future: asyncio.Future[None] = self.loop.create_future()
        self.clock.wake_at(when, self.loop, future)
        await future

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine `make()` as a task on the engine loop and await its result here.

        Cancelling the awaiting caller cancels the engine task, so a client that gives up does
        not leave work running on its behalf.
        """
        if threading.get_ident() == self._thread.ident:
            return await make()
        if self._stopped:
            raise RuntimeError("the engine is not running")
        caller = asyncio.get_running_loop()
        result: asyncio.Future[T] = caller.create_future()
        replies = mailbox(caller)
        handle: list[asyncio.Task[T]] = []
        ctx = contextvars.copy_context()

        def settle(task: asyncio.Task[T]) -> None:
            if result.done():
                return
            if task.cancelled():
                result.cancel()
            elif (exc := task.exception()) is not None:
                result.set_exception(exc)
            else:
                result.set_result(task.result())

        def done(task: asyncio.Task[T]) -> None:
            self.calls -= 1
            replies.post(settle, task)

        def start() -> None:
            task = self.loop.create_task(make(), context=ctx)
            self.calls += 1
            handle.append(task)
            task.add_done_callback(done)

        self._inbox.post(start)
        try:
            return await result
        except asyncio.CancelledError:

            def cancel() -> None:
                if handle:
                    handle[0].cancel()

            self._inbox.post(cancel)
            raise


class _Watchdog:
    """Notices an engine loop that stopped turning (a blocking call inside an `async` tool).

    A tool that calls `time.sleep` inside `async def` blocks the engine thread: every instance,
    tick and time limit stops with it, and nothing inside the loop can notice. This thread
    pings the loop; when a ping goes unanswered for `stall_seconds` it logs the engine thread's
    stack once per stall (which names the offending tool) and `stalled()` reports it, which
    `/ready` and `list_components` show.
    """

    def __init__(self, engine: Engine, stall_seconds: float) -> None:
        self._engine = engine
        self.stall_seconds = stall_seconds
        self._answered = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="statefulmcp-watchdog", daemon=True)
        self._reported = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _answer(self) -> None:
        self._answered = time.monotonic()

    def stalled(self) -> str | None:
        """Why the engine loop cannot serve right now, or None when it is turning."""
        behind = time.monotonic() - self._answered
        if behind < self.stall_seconds:
            return None
        return (
            f"the engine loop has been blocked for {behind:.1f} s: a tool or background method is "
            "running blocking code inside `async def` (see the log for its stack)"
        )

    def _run(self) -> None:
        interval = min(0.25, self.stall_seconds / 4)
        loop = self._engine.loop
        while not self._stop.wait(interval):
            try:
                loop.call_soon_threadsafe(self._answer)
            except RuntimeError:  # the loop closed: the engine is stopping
                return
            if self.stalled() is None:
                self._reported = False
            elif not self._reported:
                self._reported = True
                self._report()

    def _report(self) -> None:
        frame = sys._current_frames().get(self._engine.thread_id or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
        log.error(
            "%s; calls, ticks and time limits of every instance wait until it returns. Use "
            "`await asyncio.sleep`, or a sync `def` tool (it runs on a worker thread). Engine stack:\n%s",
            self.stalled(),
            stack,
        )


class _Clock:
    """One thread that wakes loops at precise instants, for sub-millisecond periodic ticks.

    Event loops wait with millisecond timers, so a 1 kHz tick scheduled through `asyncio.sleep`
    would be up to a millisecond late. This thread instead waits on a condition variable, which
    the kernel wakes within microseconds, then hands the wake-up to the waiting loop.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stopped = False

    def wake_at(self, when: float, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        with self._cond:
            if self._stopped:
                raise RuntimeError("the clock is stopped")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="statefulmcp-clock", daemon=True)
                self._thread.start()
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, loop, future))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.perf_counter()):
                    timeout = self._heap[0][0] - time.perf_counter() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, loop, future = heapq.heappop(self._heap)
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Deadlines:
    """Time limits of the calls running on one loop, enforced by one sweeper task.

    A timer per call (`asyncio.timeout`) costs a timer-heap insert and removal on the hot path
    of every call; limits are seconds long, so one sweep every `resolution` seconds, running only
    while some call has a limit, enforces them just as well for a dict insert and delete.
    """

    def __init__(self, resolution: float = 0.05) -> None:
        self.resolution = resolution
        self._calls: dict[object, tuple[asyncio.Task[Any], float]] = {}
        self._expired: set[object] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, seconds: float) -> object:
        """Limit the current task to `seconds` from now; returns the token to pass to `end`."""
        token = object()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._calls[token] = (task, loop.time() + seconds)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep(), context=contextvars.Context())
        return token

    def end(self, token: object) -> bool:
        """Forget a limit; True if it expired (and cancelled its task)."""
        self._calls.pop(token, None)
        if token in self._expired:
            self._expired.discard(token)
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._calls:
                await asyncio.sleep(self.resolution)
                now = loop.time()
                for token, (task, deadline) in list(self._calls.items()):
                    if deadline <= now:
                        del self._calls[token]
                        self._expired.add(token)
                        task.cancel()
        finally:
            self._sweeper = None


class SyncSlots:
    """At most `limit` sync bodies of one component on worker threads at once; callable from any loop.

    Worker threads are shared by every component, and a sync body that never returns keeps its
    thread forever: without a bound per component, one component with a hanging body would
    take every thread and stop the sync tools of all the others. A call over the bound queues
    (in arrival order) until a thread of its component frees up or its time limit ends.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0
        self._lock = threading.Lock()
        self._queue: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = deque()

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.busy < self.limit and not self._queue:
                self.busy += 1
                return
            future: asyncio.Future[None] = loop.create_future()
            self._queue.append((loop, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was granted just as we gave up: pass it on
            else:
                with self._lock, contextlib.suppress(ValueError):
                    self._queue.remove((loop, future))
            raise

    def release(self) -> None:
        with self._lock:
            if not self._queue:
                self.busy -= 1
                return
            loop, future = self._queue.popleft()
        try:
            loop.call_soon_threadsafe(self._grant, future)
        except RuntimeError:  # that caller's loop is gone; give the slot to the next one
            self.release()

    def _grant(self, future: asyncio.Future[None]) -> None:
        if future.done():
            self.release()
        else:
            future.set_result(None)

    async def run(
        self, fn: Callable[[], T], executor: concurrent.futures.Executor, *, hold: bool = True
    ) -> T:
        """Run `fn` on a worker thread of `executor` within this bound.

        With `hold` (a turn of a stateful instance), a cancelled caller still waits for the
        thread: a sync body cannot be interrupted in Python, and whoever holds an instance's turn
        never lets go while its code is still running. Without it (a stateless call) the caller
        may leave at once; the slot stays taken until the thread really ends either way.
        """
        await self.acquire()
        try:
            work = executor.submit(_carrying_generator_exit, fn)
        except BaseException:
            self.release()
            raise
        work.add_done_callback(lambda _: self.release())
        future = asyncio.wrap_future(work)
        try:
            return await (hold_until_done(future) if hold else future)
        except _CarriedGeneratorExit as carried:
            raise carried.exc from None


class _CarriedGeneratorExit(Exception):
    """A `GeneratorExit` a sync body raised, carried across the thread hand-off as an ordinary error.

    Set on a future as itself, it would be thrown into the awaiting coroutines, and a thrown
    `GeneratorExit` closes every coroutine it passes instead of raising in them: no caller could
    turn it into the call's error, and it ended the transport's tasks. Re-raised here, it can.
    """

    def __init__(self, exc: GeneratorExit) -> None:
        super().__init__(repr(exc))
        self.exc = exc


def _carrying_generator_exit(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except GeneratorExit as exc:
        raise _CarriedGeneratorExit(exc) from None


async def hold_until_done(future: asyncio.Future[T]) -> T:
    """Await `future`; if cancelled meanwhile, keep waiting for it, then re-raise the cancellation."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            # Whatever the body ends with, the caller's answer is the cancellation.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(future)
        raise


async def outcome(future: asyncio.Future[Any]) -> Any:
    """Await `future` to its end even if cancelled meanwhile; its result is the caller's answer.

    Used where work handed off (a commit) cannot be called back: reporting "cancelled" while
    the commit lands would make the caller and the disk disagree.
    """
    cancels = 0
    try:
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                if future.cancelled():
                    raise
                cancels += 1
        return future.result()
    finally:
        task = asyncio.current_task()
        if task is not None and cancels:
            for _ in range(cancels):
                task.uncancel()
