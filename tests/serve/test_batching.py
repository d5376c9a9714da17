"""The scheduler: merges concurrent jobs, splits large ones, is fair across lanes, isolates
failures, drops abandoned work, drains on close."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from petrec.serve.batching import BatcherClosedError, Lane, Piece, Scheduler


@dataclass
class FakeJob:
    value: int
    n_rows: int = 1


def _runner(batches: list[list[tuple[int, int, int]]], delay: float = 0.0):
    """Records ``(value, start, stop)`` per piece; a negative value fails its piece."""

    def run(pieces: list[Piece]) -> list[object]:
        batches.append([(p.job.value, p.start, p.stop) for p in pieces])
        if delay:
            time.sleep(delay)
        return [ValueError("bad") if p.job.value < 0 else [p.job.value * 10 + r for r in range(p.start, p.stop)]
                for p in pieces]
    return run


def _lane(batches: list, *, max_rows: int = 64, max_wait_s: float = 0.0, seen: list | None = None,
          delay: float = 0.0) -> tuple[Scheduler, Lane]:
    sched = Scheduler(ThreadPoolExecutor(1), max_rows=max_rows, max_wait_s=max_wait_s,
                      on_batch=None if seen is None else lambda name, rows, jobs: seen.append((name, rows, jobs)))
    return sched, sched.lane("a", _runner(batches, delay))


def test_concurrent_jobs_share_one_batch_and_fail_alone() -> None:
    batches: list = []
    seen: list = []

    async def main() -> list[object]:
        _, lane = _lane(batches, max_wait_s=0.05, seen=seen)
        return await asyncio.gather(*(lane.submit(FakeJob(v)) for v in (1, 2, -3, 4)), return_exceptions=True)

    results = asyncio.run(main())
    assert results[:2] == [[10], [20]] and results[3] == [40] and isinstance(results[2], ValueError)
    assert batches == [[(1, 0, 1), (2, 0, 1), (-3, 0, 1), (4, 0, 1)]] and seen == [("a", 4, 4)]


def test_max_rows_closes_a_batch() -> None:
    batches: list = []

    async def main() -> None:
        _, lane = _lane(batches, max_rows=4, max_wait_s=0.01)
        await asyncio.gather(*(lane.submit(FakeJob(v, n_rows=2)) for v in range(5)))

    asyncio.run(main())
    assert [len(x) for x in batches] == [2, 2, 1]


def test_a_large_job_is_split_and_reassembled_in_order() -> None:
    batches: list = []

    async def main() -> list[int]:
        _, lane = _lane(batches, max_rows=4)
        return await lane.submit(FakeJob(1, n_rows=10))

    assert asyncio.run(main()) == [10 + r for r in range(10)]
    assert batches == [[(1, 0, 4)], [(1, 4, 8)], [(1, 8, 10)]]


def test_lanes_take_turns_so_a_small_job_does_not_wait_for_a_large_one() -> None:
    """Lane a has a 20-piece job; lane b's 1-row job, queued just after, runs second."""
    order: list[str] = []

    def run_as(name: str):
        def run(pieces: list[Piece]) -> list[object]:
            order.append(name)
            time.sleep(0.002)
            return [[0] * p.rows for p in pieces]
        return run

    async def main() -> None:
        sched = Scheduler(ThreadPoolExecutor(1), max_rows=2, max_wait_s=0.0)
        a, b = sched.lane("a", run_as("a")), sched.lane("b", run_as("b"))
        big = asyncio.ensure_future(a.submit(FakeJob(1, n_rows=40)))
        await asyncio.sleep(0)
        small = asyncio.ensure_future(b.submit(FakeJob(2)))
        await small
        assert not big.done()  # b was answered while a's request still had 18+ pieces to go
        await big

    asyncio.run(main())
    assert order[:2] == ["a", "b"] and order.count("a") == 20 and order.count("b") == 1


def test_a_cancelled_job_stops_before_its_next_piece() -> None:
    """The caller gives up (deadline): the pieces not yet started are never run."""
    batches: list = []

    async def main() -> None:
        _, lane = _lane(batches, max_rows=2, delay=0.02)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(lane.submit(FakeJob(7, n_rows=100)), 0.05)
        await asyncio.sleep(0.1)  # the running piece finishes; nothing else starts
        assert await lane.submit(FakeJob(8)) == [80]

    asyncio.run(main())
    pieces_of_7 = [p for batch in batches for p in batch if p[0] == 7]
    assert 1 <= len(pieces_of_7) <= 5  # of 50: the rest was abandoned


def test_close_drains_queued_jobs_then_refuses() -> None:
    batches: list = []

    async def main() -> list[object]:
        _, lane = _lane(batches, max_rows=2)
        pending = [asyncio.ensure_future(lane.submit(FakeJob(v))) for v in range(5)]
        await asyncio.sleep(0)  # all five queued
        lane.close()
        with pytest.raises(BatcherClosedError):
            await lane.submit(FakeJob(9))
        return await asyncio.gather(*pending)

    assert asyncio.run(main()) == [[0], [10], [20], [30], [40]]
    assert sum(len(x) for x in batches) == 5


def test_a_crashing_runner_fails_its_batch_only() -> None:
    calls = [0]

    def run(pieces: list[Piece]) -> list[object]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("worker crashed")
        return [[p.job.value] for p in pieces]

    async def main() -> tuple[object, object]:
        sched = Scheduler(ThreadPoolExecutor(1), max_rows=8, max_wait_s=0.0)
        lane = sched.lane("a", run)
        first = await asyncio.gather(lane.submit(FakeJob(1)), return_exceptions=True)
        return first[0], await lane.submit(FakeJob(2))

    first, second = asyncio.run(main())
    assert isinstance(first, RuntimeError) and second == [2]


def test_one_inference_thread() -> None:
    """Every run happens on the executor's single thread, never on the event loop's."""
    threads: set[int] = set()

    def run(pieces: list[Piece]) -> list[object]:
        threads.add(threading.get_ident())
        return [[0] * p.rows for p in pieces]

    async def main() -> None:
        sched = Scheduler(ThreadPoolExecutor(1), max_rows=3, max_wait_s=0.0)
        lanes = [sched.lane(str(i), run) for i in range(3)]
        await asyncio.gather(*(ln.submit(FakeJob(i, n_rows=5)) for i, ln in enumerate(lanes)))
        assert threading.get_ident() not in threads

    asyncio.run(main())
    assert len(threads) == 1
