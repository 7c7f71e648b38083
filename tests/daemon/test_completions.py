"""Finished jobs are recorded in batches, and the last job of a run is not kept waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import cast

from mirrord.store import Store, Success
from mirrord.worker import Completions


class RecordingQueue:
    def __init__(self) -> None:
        self.batches: list[tuple[float, list[int]]] = []

    async def succeed_many(self, successes: Sequence[Success]) -> set[int]:
        ids = [s.job_id for s in successes]
        self.batches.append((asyncio.get_running_loop().time(), ids))
        return set(ids)


def completions_for(running: set[int], linger: float = 30.0) -> tuple[Completions, RecordingQueue]:
    """A long linger by default: anything recorded quickly was not waiting for it."""
    queue = RecordingQueue()
    store = cast(Store, SimpleNamespace(queue=queue))
    completions = Completions(store, lambda: bool(running))
    completions.LINGER = linger
    return completions, queue


async def finish(completions: Completions, running: set[int], job_id: int) -> None:
    """What the worker pool does when a job succeeds: hand the success over, then (once the
    job's task is done, after the flusher has already started) free the slot."""
    completions.submit(Success(job_id, "w", "copied"))
    await asyncio.sleep(0)
    running.discard(job_id)
    completions.job_ended()


async def test_jobs_finishing_close_together_are_recorded_in_one_transaction() -> None:
    running = {1, 2, 3}
    completions, queue = completions_for(running)
    await finish(completions, running, 1)
    await asyncio.sleep(0.02)
    await finish(completions, running, 2)
    await asyncio.sleep(0.02)
    await finish(completions, running, 3)
    await completions.flush()
    assert [ids for _, ids in queue.batches] == [[1, 2, 3]]


async def test_the_last_job_is_recorded_at_once_not_after_the_linger() -> None:
    running = {1}
    completions, queue = completions_for(running)
    started = asyncio.get_running_loop().time()
    await finish(completions, running, 1)
    await completions.flush()
    ((recorded_at, ids),) = queue.batches
    assert ids == [1]
    assert recorded_at - started < completions.LINGER / 2


async def test_a_batch_lingers_while_jobs_run_but_not_beyond_the_linger() -> None:
    running = {1, 2}
    completions, queue = completions_for(running, linger=0.2)
    started = asyncio.get_running_loop().time()
    await finish(completions, running, 1)  # job 2 keeps running, for good
    async with asyncio.timeout(10):
        while not queue.batches:
            await asyncio.sleep(0.01)
    ((recorded_at, ids),) = queue.batches
    assert ids == [1]
    assert recorded_at - started >= 0.2 * 0.9


async def test_a_success_the_store_refused_is_reported_as_not_recorded() -> None:
    """A job cancelled while it ran finishes anyway: logs and metrics must not call it copied."""

    class RefusingQueue(RecordingQueue):
        async def succeed_many(self, successes: Sequence[Success]) -> set[int]:
            return await super().succeed_many(successes) - {2}  # job 2 was cancelled

    queue = RefusingQueue()
    completions = Completions(cast(Store, SimpleNamespace(queue=queue)), lambda: False)
    reports: dict[int, bool] = {}

    def report_for(job_id: int) -> Callable[[bool], None]:
        return lambda recorded: reports.update({job_id: recorded})

    for job_id in (1, 2):
        completions.submit(Success(job_id, "w", "copied"), report_for(job_id))
    await completions.flush()
    assert reports == {1: True, 2: False}
