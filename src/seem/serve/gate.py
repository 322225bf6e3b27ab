"""``InferenceGate``: bounded concurrency for model calls, interactive calls first.

At most ``workers`` calls run at once (worker threads); at most ``max_pending`` are running or waiting. A request
beyond that is refused **at once** with 503 and ``Retry-After`` instead of piling up, and a request that is not
finished after its timeout gets 504 (a call that already started runs to its end in its thread and still counts
against ``max_pending`` until then, so timeouts never let more work pile up than the limit allows).

Waiting calls are served by priority, then in arrival order: ``INTERACTIVE`` calls (a click, a box, undo: the
decoder only, milliseconds) go before ``HEAVY`` ones (an upload runs the image encoder; panoptic, segment-everything,
exports, video decoding), so clicks stay immediate while other users upload images.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from seem.serve.errors import ApiError

__all__ = ["HEAVY", "INTERACTIVE", "Deadline", "InferenceGate"]

T = TypeVar("T")

INTERACTIVE = 0
HEAVY = 1
_STOP = 99


class Deadline:
    """The time by which a request must finish (``time.monotonic`` seconds)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self.at = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def check(self, what: str = "the request") -> None:
        if time.monotonic() >= self.at:
            raise ApiError(504, f"{what} did not finish within {self.seconds:g} s", "timeout")


class InferenceGate:
    """``workers`` threads serving a priority queue that admits at most ``max_pending`` calls (running + queued).

    Args:
        workers: calls running at once.
        max_pending: calls admitted at once; ``submit`` raises ``ApiError(503)`` beyond.
        timeout_s: time limit of ``run`` (the app reads it per request, so it may be changed at run time).
    """

    def __init__(self, workers: int, max_pending: int, timeout_s: float) -> None:
        self.workers = int(workers)
        self.max_pending = int(max_pending)
        self.timeout_s = float(timeout_s)
        self._queue: queue.PriorityQueue[tuple[int, int, Any, Any, Any]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._pending = 0
        self.refused = 0
        self.timed_out = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"seem-serve-{i}", daemon=True) for i in range(self.workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        """Calls running or waiting now."""
        with self._lock:
            return self._pending

    def submit(self, fn: Callable[..., T], *args: Any, priority: int = HEAVY) -> Future[T]:
        """Queue ``fn(*args)``, or raise ``ApiError(503)`` when ``max_pending`` calls are admitted."""
        with self._lock:
            if self._pending >= self.max_pending:
                self.refused += 1
                raise ApiError(
                    503,
                    f"the server is busy ({self._pending} model requests running or waiting, the limit is "
                    f"{self.max_pending}); retry shortly",
                    "busy",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
        fut: Future[T] = Future()
        fut.add_done_callback(self._release)
        self._queue.put((int(priority), next(self._seq), fut, fn, args))
        return fut

    def _release(self, _: Any) -> None:
        with self._lock:
            self._pending -= 1

    def _work(self) -> None:
        while True:
            prio, _, fut, fn, args = self._queue.get()
            if prio == _STOP:
                return
            if not fut.set_running_or_notify_cancel():  # cancelled while waiting
                continue
            try:
                result = fn(*args)
            except BaseException as e:
                fut.set_exception(e)
            else:
                fut.set_result(result)

    async def run(self, fn: Callable[..., T], *args: Any, deadline: Deadline | None = None, priority: int = HEAVY) -> T:
        """Await ``fn(*args)`` run by a worker; ``ApiError(504)`` when ``deadline`` (default ``timeout_s``) passes.

        ``fn`` gets no deadline itself; pass the same ``Deadline`` in ``args`` when it waits for locks.
        """
        dl = deadline or Deadline(self.timeout_s)
        fut = self.submit(fn, *args, priority=priority)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=dl.remaining())
        except TimeoutError:
            fut.cancel()  # only cancels a call still waiting; a running one ends in its thread
            with self._lock:
                self.timed_out += 1
            raise ApiError(504, f"the request did not finish within {dl.seconds:g} s", "timeout") from None

    def shutdown(self) -> None:
        """Stop the workers after the calls already queued ahead of the stop marks."""
        for _ in self._threads:
            self._queue.put((_STOP, next(self._seq), None, None, None))
