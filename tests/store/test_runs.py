"""Runs complete by themselves; status views; retention deletes only old finished history."""

from __future__ import annotations

import asyncio
from typing import NoReturn, cast

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from mirrord import scheduler
from mirrord.config.daemon import MirrorConfig
from mirrord.errors import StoreError
from mirrord.store import JobState, RunStatus, RunTrigger, Store
from mirrord.store.models import jobs
from mirrord.store.runs import complete_runs
from tests.store.support import FakeClock, copy_jobs, get_run


async def _work_off(store: Store, failures: tuple[str, ...] = ()) -> None:
    """Claim every due job; fail those whose key ends with one of `failures`."""
    q = store.queue
    while batch := await q.claim("w", limit=50):
        for job in batch:
            if any(job.key.endswith(f) for f in failures):
                await q.fail(job.id, "w", "denied", "403 denied")
            else:
                await q.succeed(job.id, "w", "copied")


async def test_a_closed_run_completes_when_its_last_job_finishes(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    run_id = await q.create_run(RunTrigger.SCHEDULE)
    await q.enqueue(copy_jobs(3), run_id)
    run = await q.close_run(run_id)
    assert run is not None
    assert (run.status, run.finished_at) == (RunStatus.RUNNING, None)
    clock.advance(10)
    await _work_off(store)
    run = await get_run(q, run_id)
    assert (run.status, run.finished_at, run.jobs_total, run.jobs_succeeded) == (
        RunStatus.SUCCEEDED,
        clock.now,
        3,
        3,
    )


async def test_an_open_run_waits_for_planning_to_close_it(store: Store) -> None:
    q = store.queue
    run_id = await q.create_run("once")
    await q.enqueue(copy_jobs(1), run_id)
    await _work_off(store)
    assert (await get_run(q, run_id)).status is RunStatus.RUNNING
    closed = await q.close_run(run_id)
    assert closed is not None
    assert closed.status is RunStatus.SUCCEEDED


async def test_a_run_adopts_the_queued_jobs_of_keys_it_plans_again(store: Store) -> None:
    """`retry`, then a one-shot sync of the same keys: the new run waits for the retried job
    too, and the older run, left with nothing to wait for, completes."""
    q = store.queue
    older = await q.create_run("schedule")
    await q.enqueue(copy_jobs(2), older, priority=5)
    await q.close_run(older)
    newer = await q.create_run("once")
    result = await q.enqueue(copy_jobs(3), newer)
    await q.close_run(newer)
    assert (len(result.job_ids), result.duplicates) == (1, 2)
    queued = await q.jobs(JobState.QUEUED)
    assert {job.run_id for job in queued} == {newer}
    assert {job.priority for job in queued} == {0, 5}  # adoption never lowers a priority
    assert (await get_run(q, older)).status is RunStatus.SUCCEEDED
    assert (await get_run(q, newer)).status is RunStatus.RUNNING
    await _work_off(store)
    run = await get_run(q, newer)
    assert (run.status, run.jobs_total, run.jobs_succeeded) == (RunStatus.SUCCEEDED, 3, 3)


async def test_a_run_with_a_failed_job_fails_and_its_summary_says_why(store: Store) -> None:
    q = store.queue
    run_id = await q.create_run("schedule")
    await q.enqueue(copy_jobs(4), run_id)
    await q.close_run(run_id)
    await _work_off(store, failures=("t2",))
    summary = await q.run_summary(run_id)
    assert summary is not None
    assert summary.run.status is RunStatus.FAILED
    assert (summary.run.jobs_succeeded, summary.run.jobs_failed) == (3, 1)
    assert summary.by_state == {JobState.SUCCEEDED: 3, JobState.FAILED: 1}
    assert summary.by_outcome == {"copied": 3}
    [failed] = summary.failed
    assert (failed.key, failed.reason, failed.error) == (
        "reg.example/repo:t2",
        "denied",
        "403 denied",
    )


async def test_superseded_and_cancelled_jobs_do_not_fail_a_run(store: Store) -> None:
    q = store.queue
    run_id = await q.create_run("manual")
    ids = (await q.enqueue(copy_jobs(2), run_id)).job_ids
    await q.close_run(run_id)
    await q.cancel(ids[0])
    await _work_off(store)
    run = await get_run(q, run_id)
    assert (run.status, run.jobs_cancelled, run.jobs_succeeded) == (RunStatus.SUCCEEDED, 1, 1)


async def test_cancelling_a_run_cancels_its_queued_jobs(store: Store) -> None:
    q = store.queue
    run_id = await q.create_run("cli")
    await q.enqueue(copy_jobs(3), run_id)
    [running] = await q.claim("w")
    run = await q.finish_run(run_id, RunStatus.CANCELLED)
    assert run is not None
    assert run.status is RunStatus.CANCELLED
    counts = await q.counts_by_state()
    assert (counts[JobState.CANCELLED], counts[JobState.RUNNING]) == (2, 1)
    assert await q.succeed(running.id, "w", "copied")  # the running job finishes on its own
    assert (await get_run(q, run_id)).status is RunStatus.CANCELLED


async def test_runs_lists_newest_first(store: Store) -> None:
    ids = [await store.queue.create_run("schedule") for _ in range(3)]
    assert [run.id for run in await store.queue.runs(limit=2)] == ids[:0:-1]


async def test_source_status_tells_sources_apart(store: Store, clock: FakeClock) -> None:
    q = store.queue
    first = await q.create_run("schedule")
    await q.enqueue(copy_jobs(2, "hub/a", source="hub"), first)
    await q.enqueue(copy_jobs(2, "quay/b", source="quay"), first)
    await q.close_run(first)
    clock.advance(100)
    await _work_off(store, failures=("quay/b:t1",))
    first_end = clock.now
    clock.advance(100)
    second = await q.create_run("schedule")
    await q.enqueue(copy_jobs(1, "hub/a", source="hub"), second)
    status = {s.source_name: s for s in await q.source_status()}
    assert status["hub"].last_success_at == first_end
    assert (status["hub"].last_run_id, status["hub"].last_run_status) == (second, RunStatus.RUNNING)
    assert status["hub"].pending == 1
    assert status["quay"].last_success_at is None  # one of its jobs failed in its only run
    assert (status["quay"].last_run_status, status["quay"].pending) == (RunStatus.FAILED, 0)
    assert await q.last_success_by_source() == {"hub": first_end, "quay": first_end}


async def test_a_retried_job_that_succeeds_makes_its_source_succeed_when_it_does(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    run_id = await q.create_run("schedule")
    await q.enqueue(copy_jobs(2, "quay/b", source="quay"), run_id)
    await q.close_run(run_id)
    await _work_off(store, failures=("quay/b:t1",))
    [failed] = [job for job in await q.jobs() if job.state is JobState.FAILED]
    clock.advance(3600)

    await q.retry(failed.id)
    [quay] = await q.source_status()
    assert quay.last_success_at is None  # retried, not done yet
    await _work_off(store)

    [quay] = await q.source_status()
    assert quay.last_success_at == clock.now  # when the source became whole, not the run's end


async def test_prune_deletes_only_old_finished_jobs_and_runs(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    old_run = await q.create_run("schedule")
    await q.enqueue(copy_jobs(3, "old"), old_run)
    await q.close_run(old_run)
    await _work_off(store)
    await q.enqueue(copy_jobs(1, "running"))  # old, but still running
    await q.claim("w", lease_seconds=10**7)
    await q.enqueue(copy_jobs(1, "waiting"), due_at=clock.now + 10**8)  # old, but still queued
    clock.advance(40 * 86400)
    new_run = await q.create_run("schedule")
    await q.enqueue(copy_jobs(2, "new"), new_run)
    await q.close_run(new_run)
    await _work_off(store)

    result = await q.prune_history(keep_days=30)

    assert (result.jobs_deleted, result.runs_deleted) == (3, 1)
    remaining = {job.key for job in await q.jobs()}
    assert remaining == {"running:t0", "waiting:t0", "new:t0", "new:t1"}
    assert [run.id for run in await q.runs()] == [new_run]


async def test_prune_by_count_keeps_the_newest_finished(store: Store, clock: FakeClock) -> None:
    q = store.queue
    for n in range(5):
        clock.advance(1)
        await q.enqueue(copy_jobs(1, f"k{n}"))
        await _work_off(store)
    await q.enqueue(copy_jobs(1, "queued"))
    result = await q.prune_history(keep_count=2)
    assert result.jobs_deleted == 3
    assert {job.key for job in await q.jobs()} == {"k3:t0", "k4:t0", "queued:t0"}
    assert (await q.prune_history()).jobs_deleted == 0


async def test_two_jobs_ending_together_on_postgresql_still_complete_their_run(
    postgres_url: str, clock: FakeClock
) -> None:
    """READ COMMITTED: each transaction ending one of a run's last two jobs sees the other job
    still running. The run row is locked before the check, so the second one waits, then sees
    the first's commit and completes the run. (SQLite runs one writer at a time.)"""
    store = await Store.open(postgres_url, clock=clock)
    engine = create_async_engine(postgres_url)
    try:
        q = store.queue
        run_id = await q.create_run(RunTrigger.SCHEDULE)
        await q.enqueue(copy_jobs(2), run_id)
        await q.close_run(run_id)
        first, second = await q.claim("w", limit=2)
        async with engine.connect() as a, engine.connect() as b:
            await _end_job(a, first.id, clock.now)
            await _end_job(b, second.id, clock.now)
            await complete_runs(a, {run_id}, clock.now)
            waiting = asyncio.create_task(complete_runs(b, {run_id}, clock.now))
            await asyncio.sleep(0.3)
            assert not waiting.done()  # b waits for a's lock on the run
            await a.commit()
            await asyncio.wait_for(waiting, timeout=10)
            await b.commit()
        run = await get_run(q, run_id)
        assert (run.status, run.jobs_succeeded) == (RunStatus.SUCCEEDED, 2)
    finally:
        await engine.dispose()
        await store.close()


async def _end_job(conn: AsyncConnection, job_id: int, now: float) -> None:
    """What recording a success does to the job row, inside a transaction left open."""
    await conn.execute(
        update(jobs)
        .where(jobs.c.id == job_id)
        .values(state=JobState.SUCCEEDED.value, finished_at=now, outcome="copied")
    )


async def test_a_run_whose_planning_fails_is_ended_not_left_running(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(config: MirrorConfig) -> NoReturn:
        raise StoreError("database error while enqueueing jobs: disk I/O error")

    monkeypatch.setattr(scheduler, "initial_jobs", broken)
    with pytest.raises(StoreError, match="disk I/O error"):
        await scheduler.enqueue_run(store, cast(MirrorConfig, None), RunTrigger.SCHEDULE)
    (run,) = await store.queue.runs()
    assert run.status is RunStatus.FAILED
    assert run.finished_at is not None
