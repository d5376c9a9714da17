"""The micro-batcher: merges concurrent jobs, isolates failures, drains on close."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from petrec.serve.batching import BatcherClosedError, MicroBatcher


@dataclass
class FakeJob:
    value: int
    n_rows: int = 1


def _runner(batches: list[list[int]]):
    def run(jobs: list[FakeJob]) -> list[object]:
        batches.append([j.value for j in jobs])
        return [ValueError("bad") if j.value < 0 else j.value * 10 for j in jobs]
    return run


def test_concurrent_jobs_share_one_batch_and_fail_alone() -> None:
    batches: list[list[int]] = []
    seen: list[tuple[int, int]] = []

    async def main() -> list[object]:
        b = MicroBatcher(_runner(batches), ThreadPoolExecutor(1), max_rows=64, max_wait_s=0.05,
                         on_batch=lambda rows, jobs: seen.append((rows, jobs)))
        return await asyncio.gather(*(b.submit(FakeJob(v)) for v in (1, 2, -3, 4)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:2] == [10, 20] and results[3] == 40 and isinstance(results[2], ValueError)
    assert batches == [[1, 2, -3, 4]] and seen == [(4, 4)]


def test_max_rows_closes_a_batch() -> None:
    batches: list[list[int]] = []

    async def main() -> None:
        b = MicroBatcher(_runner(batches), ThreadPoolExecutor(1), max_rows=4, max_wait_s=0.01)
        await asyncio.gather(*(b.submit(FakeJob(v, n_rows=2)) for v in range(5)))

    asyncio.run(main())
    assert [len(x) for x in batches] == [2, 2, 1]


def test_close_drains_queued_jobs_then_refuses() -> None:
    batches: list[list[int]] = []

    async def main() -> list[object]:
        b = MicroBatcher(_runner(batches), ThreadPoolExecutor(1), max_rows=2, max_wait_s=0.0)
        pending = [asyncio.ensure_future(b.submit(FakeJob(v))) for v in range(5)]
        await asyncio.sleep(0)  # all five queued
        b.close()
        with pytest.raises(BatcherClosedError):
            await b.submit(FakeJob(9))
        return await asyncio.gather(*pending)

    assert asyncio.run(main()) == [0, 10, 20, 30, 40]
    assert sum(len(x) for x in batches) == 5


def test_a_crashing_runner_fails_its_batch_only() -> None:
    calls = [0]

    def run(jobs: list[FakeJob]) -> list[object]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("worker crashed")
        return [j.value for j in jobs]

    async def main() -> tuple[object, object]:
        b = MicroBatcher(run, ThreadPoolExecutor(1), max_rows=8, max_wait_s=0.0)
        first = await asyncio.gather(b.submit(FakeJob(1)), return_exceptions=True)
        return first[0], await b.submit(FakeJob(2))

    first, second = asyncio.run(main())
    assert isinstance(first, RuntimeError) and second == 2
