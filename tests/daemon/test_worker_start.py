"""A job this worker is already running is not started a second time beside it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

from mirrord.store import Job, Store
from mirrord.worker import JobOutcome, PoolSettings, WorkerPool


async def test_a_job_claimed_back_while_its_attempt_still_runs_is_not_started_twice() -> None:
    calls: list[int] = []

    async def runner(job: Any) -> JobOutcome:
        calls.append(job.id)
        await asyncio.Event().wait()  # a long copy
        raise AssertionError("never reached")

    store = cast(Store, SimpleNamespace(queue=SimpleNamespace()))
    pool = WorkerPool(store, runner, PoolSettings(size=4), name="host:1")
    job = cast(Job, SimpleNamespace(id=7, kind=None, key="k", attempts=1, source_name="s"))
    pool._start(job)
    first = pool.running[7]
    await asyncio.sleep(0)
    pool._start(job)  # the same job again: a lease expired and this worker claimed it back
    await asyncio.sleep(0)
    assert calls == [7]
    assert pool.running == {7: first}
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    assert pool.running == {}
