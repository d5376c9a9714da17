"""Per-adapter micro-batching: requests that arrive together share one forward pass.

Each loaded adapter owns a :class:`MicroBatcher` (an asyncio queue and one task). The task
takes the first waiting job, waits up to ``max_wait_s`` for more (or until ``max_rows``
examples are queued), runs the batch in the inference thread and fans results back.
:meth:`MicroBatcher.close` lets everything already queued finish (used when an adapter is
replaced or removed: in-flight requests complete on the old adapter, new ones go to the new).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

_CLOSE = object()


class BatcherClosedError(RuntimeError):
    """The adapter was replaced or removed before the job was queued."""


class MicroBatcher:
    """Collect jobs, run them in batches with ``run(jobs) -> results`` on ``executor``.

    Args:
        run: Called in the executor with a list of jobs; returns one result (or exception) per job.
        executor: Where ``run`` executes (one inference thread per worker process).
        max_rows: A batch closes once its jobs hold this many rows (``job.n_rows``).
        max_wait_s: How long a batch waits for more jobs after its first.
        on_batch: Called with ``(rows, jobs)`` for every batch (metrics).
    """

    def __init__(self, run: Callable[[list[Any]], list[Any]], executor: Executor, *, max_rows: int,
                 max_wait_s: float, on_batch: Callable[[int, int], None] | None = None) -> None:
        self._run = run
        self._executor = executor
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    async def submit(self, job: Any) -> Any:
        """Queue ``job`` and wait for its result (re-raises the job's exception).

        Raises:
            BatcherClosedError: :meth:`close` was called before.
        """
        if self.closed:
            raise BatcherClosedError("adapter was replaced or removed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((job, fut))
        return await fut

    def close(self) -> None:
        """Accept no new jobs; the ones already queued still run."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_CLOSE)

    def _drain(self, batch: list[Any], rows: int) -> tuple[int, bool]:
        while rows < self._max_rows and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is _CLOSE:
                return rows, True
            batch.append(item)
            rows += item[0].n_rows
        return rows, False

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        closing = False
        while not closing:
            first = await self._queue.get()
            if first is _CLOSE:
                break
            batch = [first]
            rows, closing = self._drain(batch, first[0].n_rows)
            if not closing and rows < self._max_rows and self._max_wait_s > 0:
                await asyncio.sleep(self._max_wait_s)
                rows, closing = self._drain(batch, rows)
            jobs = [job for job, _ in batch]
            try:
                results = await loop.run_in_executor(self._executor, self._run, jobs)
            except Exception as exc:  # the whole batch failed: every waiting request learns why
                results = [exc] * len(jobs)
            if self._on_batch is not None:
                self._on_batch(rows, len(jobs))
            for (_, fut), result in zip(batch, results, strict=True):
                if fut.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
