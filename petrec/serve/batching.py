"""Fair micro-batching: one scheduler per worker, one lane (queue) per served adapter.

Every loaded adapter owns a :class:`Lane`. One :class:`Scheduler` task feeds the worker's
single inference thread: it visits the lanes that have work in round-robin order and runs
**one micro-batch of at most ``max_rows`` rows** from each lane per turn. A batch merges
the waiting requests of that lane; a request with more rows than fit is split across
batches (it keeps its place at the head of its lane), so one adapter's large request costs
the other adapters at most one micro-batch of waiting, never the whole request.

After an idle period the scheduler waits ``max_wait_s`` for more requests before it forms
the first batch (while busy, requests gather during the running batch anyway). A request
whose caller gave up (deadline, disconnect: its future is cancelled) is dropped before its
next micro-batch runs: the work not yet started is abandoned.

:meth:`Lane.close` lets everything already queued finish (used when an adapter is replaced or
removed: in-flight requests complete on the old adapter, new ones go to the new).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("petrec.serve")


class BatcherClosedError(RuntimeError):
    """The adapter was replaced or removed before the job was queued."""


@dataclass(frozen=True)
class Piece:
    """Rows ``start:stop`` of one job: what a micro-batch runs of it."""

    job: Any
    start: int
    stop: int

    @property
    def rows(self) -> int:
        """Rows in this piece."""
        return self.stop - self.start


@dataclass
class _Pending:
    """A queued job, its caller's future and the rows done so far."""

    job: Any
    future: asyncio.Future[Any]
    next_row: int = 0
    filled: int = 0
    results: list[Any] = field(default_factory=list)


#: ``run(pieces)`` → one entry per piece: a list of per-row results, or the exception it raised.
RunFn = Callable[[list[Piece]], list[Any]]


class Lane:
    """The queue of one served adapter on the shared :class:`Scheduler` (make it with
    :meth:`Scheduler.lane`).

    Args:
        scheduler: The worker's scheduler.
        name: The adapter's name (metrics).
        run: Called in the inference thread with the pieces of one micro-batch.
    """

    def __init__(self, scheduler: Scheduler, name: str, run: RunFn) -> None:
        self._scheduler = scheduler
        self.name = name
        self.run = run
        self._queue: deque[_Pending] = deque()
        self.closed = False

    @property
    def has_work(self) -> bool:
        """Whether a job is waiting (cancelled ones are dropped first)."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        return bool(self._queue)

    async def submit(self, job: Any) -> list[Any]:
        """Queue ``job`` (``job.n_rows`` rows) and wait for its per-row results, in row order.

        Cancelling the wait (e.g. ``asyncio.wait_for``'s timeout) abandons the job's rows that
        have not started yet.

        Raises:
            BatcherClosedError: :meth:`close` was called before.
            Exception: What the job's run raised (the first failing piece).
        """
        if self.closed:
            raise BatcherClosedError("adapter was replaced or removed")
        n = int(job.n_rows)
        if n <= 0:
            return []
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(job, fut, results=[None] * n))
        self._scheduler.wake()
        return await fut

    def close(self) -> None:
        """Accept no new jobs; the ones already queued still run."""
        self.closed = True
        self._scheduler.wake()

    def take(self, max_rows: int) -> list[tuple[_Pending, Piece]]:
        """Up to ``max_rows`` rows from the head of the queue (a large job is split)."""
        batch: list[tuple[_Pending, Piece]] = []
        rows = 0
        while self._queue and rows < max_rows:
            pending = self._queue[0]
            if pending.future.done():  # the caller gave up: abandon the rest of its work
                self._queue.popleft()
                continue
            n = len(pending.results)
            size = min(n - pending.next_row, max_rows - rows)
            batch.append((pending, Piece(pending.job, pending.next_row, pending.next_row + size)))
            pending.next_row += size
            rows += size
            if pending.next_row >= n:
                self._queue.popleft()
        return batch

    @staticmethod
    def deliver(batch: list[tuple[_Pending, Piece]], results: list[Any]) -> None:
        """Hand each piece's results to its job; a job is answered when all its rows are in."""
        if len(results) != len(batch):
            results = [RuntimeError(f"run returned {len(results)} results for {len(batch)} pieces")] * len(batch)
        for (pending, piece), result in zip(batch, results, strict=True):
            if pending.future.done():  # failed earlier, timed out or the client went away
                continue
            if not isinstance(result, BaseException) and len(result) != piece.rows:
                result = RuntimeError(f"run returned {len(result)} rows for a piece of {piece.rows}")
            if isinstance(result, BaseException):
                pending.future.set_exception(result)
                continue
            pending.results[piece.start:piece.stop] = result
            pending.filled += piece.rows
            if pending.filled == len(pending.results):
                pending.future.set_result(pending.results)


class Scheduler:
    """Round-robin micro-batches across lanes on one executor (the worker's inference thread).

    Args:
        executor: Where every ``run`` executes (one thread: torch and the shared tokenizers
            are only ever used from it).
        max_rows: Rows per micro-batch (a large job is split into pieces of at most this).
        max_wait_s: After being idle, how long to wait for more jobs before the first batch.
        on_batch: Called with ``(lane name, rows, jobs)`` for every micro-batch (metrics).
    """

    def __init__(self, executor: Executor, *, max_rows: int, max_wait_s: float,
                 on_batch: Callable[[str, int, int], None] | None = None) -> None:
        self._executor = executor
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._lanes: list[Lane] = []
        self._cursor = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def lane(self, name: str, run: RunFn) -> Lane:
        """A new lane (one per loaded adapter instance)."""
        lane = Lane(self, name, run)
        self._lanes.append(lane)
        return lane

    def wake(self) -> None:
        """Tell the scheduler there is work (starts its task on first use, or after a crash)."""
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (e.g. closing a lane at exit): nothing to wake
                return
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._loop())
        assert self._wake is not None
        self._wake.set()

    def stop(self) -> None:
        """Cancel the scheduler task (server shutdown)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _next_lane(self) -> Lane | None:
        """The next lane with work after the last one served (closed, drained lanes are dropped)."""
        self._lanes = [ln for ln in self._lanes if not (ln.closed and not ln.has_work)]
        n = len(self._lanes)
        for i in range(n):
            lane = self._lanes[(self._cursor + i) % n]
            if lane.has_work:
                self._cursor = (self._cursor + i + 1) % n
                return lane
        return None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            lane = self._next_lane()
            if lane is None:
                self._wake.clear()
                await self._wake.wait()
                if self._max_wait_s > 0:
                    await asyncio.sleep(self._max_wait_s)
                continue
            batch = lane.take(self._max_rows)
            if not batch:
                continue
            try:
                await self._run(loop, lane, batch)
            except Exception as exc:  # a bug here must not leave requests waiting for their deadline
                log.exception("scheduler error on adapter %s", lane.name)
                for pending, _ in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)

    async def _run(self, loop: asyncio.AbstractEventLoop, lane: Lane, batch: list[tuple[_Pending, Piece]]) -> None:
        pieces = [piece for _, piece in batch]
        try:
            results = await loop.run_in_executor(self._executor, lane.run, pieces)
        except Exception as exc:  # the whole batch failed: every waiting request learns why
            results = [exc] * len(pieces)
        if self._on_batch is not None:
            try:
                self._on_batch(lane.name, sum(p.rows for p in pieces), len(pieces))
            except Exception:  # metrics must never stop the scheduler
                log.exception("on_batch callback failed")
        Lane.deliver(batch, results)
