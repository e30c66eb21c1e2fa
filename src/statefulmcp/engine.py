"""The engine thread and the bridge into it.

Stateful instances live on one dedicated thread running its own asyncio loop, so their state is
only ever touched from one thread and user code never deals with threads or locks. The
transport (or any other caller) runs on another loop and hands work over through the bridge.

The bridge is on the hot path of every stateful call, so it batches: a burst of calls from one
side costs one wake-up of the other side (one `call_soon_threadsafe`, one self-pipe write), not
one per call. `_Mailbox` is that batching queue; there is one into the engine and one back into
each caller loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import heapq
import logging
import threading
import time
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


class Engine:
    """Owns the engine thread, its loop, and a worker pool for sync tool bodies."""

    def __init__(self, *, workers: int = 32) -> None:
        self.loop = uvloop.new_event_loop()
        self._inbox = _Mailbox(self.loop)
        self._replies: WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox] = WeakKeyDictionary()
        self._replies_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="statefulmcp-engine", daemon=True)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="statefulmcp-sync"
        )
        self.loop.set_default_executor(self.pool)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self._thread.start()

    def on_engine(self) -> bool:
        """True when the caller runs on the engine thread."""
        return threading.get_ident() == self._thread.ident

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel whatever still runs on the engine loop, then stop the thread."""
        if not self._thread.is_alive():
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
        if not self._thread.is_alive():
            self.loop.close()

    def _reply_box(self, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        box = self._replies.get(loop)
        if box is None:
            with self._replies_lock:
                box = self._replies.get(loop)
                if box is None:
                    box = self._replies[loop] = _Mailbox(loop)
        return box

    async def run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run the coroutine `make()` as a task on the engine loop and await its result here.

        Cancelling the awaiting caller cancels the engine task, so a client that gives up does
        not leave work running on its behalf.
        """
        if self.on_engine():
            return await make()
        caller = asyncio.get_running_loop()
        result: asyncio.Future[T] = caller.create_future()
        replies = self._reply_box(caller)
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

        def start() -> None:
            task = self.loop.create_task(make(), context=ctx)
            handle.append(task)
            task.add_done_callback(lambda t: replies.post(settle, t))

        self._inbox.post(start)
        try:
            return await result
        except asyncio.CancelledError:

            def cancel() -> None:
                if handle:
                    handle[0].cancel()

            self._inbox.post(cancel)
            raise


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

    def wake_at(self, when: float, loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="statefulmcp-clock", daemon=True)
                self._thread.start()
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, loop, future))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.perf_counter():
                    timeout = self._heap[0][0] - time.perf_counter() if self._heap else None
                    self._cond.wait(timeout)
                _, _, loop, future = heapq.heappop(self._heap)
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
                loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_clock = _Clock()


async def sleep_until(when: float) -> None:
    """Sleep until `time.perf_counter()` reaches `when`, precise to tens of microseconds."""
    loop = asyncio.get_running_loop()
    if when - time.perf_counter() > 0.01:
        # The bulk of a long wait goes to the loop's own timer; only the end needs precision.
        await asyncio.sleep(when - time.perf_counter() - 0.005)
    future: asyncio.Future[None] = loop.create_future()
    _clock.wake_at(when, loop, future)
    await future


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
