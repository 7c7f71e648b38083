"""The job lifecycle on both backends: dedup, claim order, leases, failure, reap, retry."""

from __future__ import annotations

from mirrord.model import CopyRequest
from mirrord.refs import ImageReference
from mirrord.store import JobKind, JobState, NewJob, RunStatus, Store, Success, TagUpdate
from tests.store.support import FakeClock, copy_jobs, get_job


async def test_enqueue_collapses_duplicates_of_a_queued_key(store: Store) -> None:
    q = store.queue
    first = await q.enqueue(copy_jobs(3))
    again = await q.enqueue([*copy_jobs(4), *copy_jobs(1)])
    assert (first.enqueued, first.duplicates) == (3, 0)
    assert (again.enqueued, again.duplicates) == (1, 4)  # t0..t2 queued already, t0 twice
    assert (await q.counts_by_state())[JobState.QUEUED] == 4


async def test_a_key_that_is_only_running_gets_one_new_queued_job(store: Store) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [running] = await q.claim("w1")
    assert (await q.enqueue(copy_jobs(1))).enqueued == 1
    assert (await q.enqueue(copy_jobs(1))).duplicates == 1
    states = sorted(job.state for job in await q.jobs())
    assert states == [JobState.QUEUED, JobState.RUNNING]
    assert running.key == (await q.jobs(JobState.QUEUED))[0].key


async def test_copy_requests_round_trip_through_the_queue(store: Store) -> None:
    request = CopyRequest(
        ImageReference.parse("docker.io/library/busybox:1.36"),
        ImageReference.parse("mirror.example/library/busybox:1.36"),
        source_name="hub",
    )
    result = await store.queue.enqueue([request])
    [job] = await store.queue.claim("w")
    assert job.id == result.job_ids[0]
    assert (job.kind, job.key, job.source_name) == (JobKind.COPY, request.key, "hub")
    assert job.copy_request() == request


async def test_list_jobs_carry_an_opaque_payload(store: Store) -> None:
    payload = {"source": "hub", "repos": ["a", "b"], "page": 2}
    await store.queue.enqueue([NewJob.listing("list:hub/a", payload, "hub")])
    [job] = await store.queue.claim("w")
    assert (job.kind, job.payload) == (JobKind.LIST, payload)


async def test_claim_takes_higher_priority_first_then_earlier_due(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(2, "low"), priority=0, due_at=clock.now - 50)
    await q.enqueue(copy_jobs(2, "high"), priority=10)
    await q.enqueue(copy_jobs(1, "early"), priority=10, due_at=clock.now - 100)
    keys = [job.key for job in await q.claim("w", limit=10)]
    assert keys == ["early:t0", "high:t0", "high:t1", "low:t0", "low:t1"]


async def test_claim_leaves_jobs_that_are_not_due_yet(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1), due_at=clock.now + 30)
    assert await q.claim("w") == []
    clock.advance(30)
    assert len(await q.claim("w")) == 1


async def test_claim_counts_the_attempt_and_sets_the_lease(store: Store, clock: FakeClock) -> None:
    await store.queue.enqueue(copy_jobs(1))
    [job] = await store.queue.claim("w1", lease_seconds=45)
    assert (job.state, job.worker, job.attempts) == (JobState.RUNNING, "w1", 1)
    assert (job.lease_until, job.started_at) == (clock.now + 45, clock.now)


async def test_claim_never_takes_a_key_that_is_already_running(store: Store) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [first] = await q.claim("w1")
    await q.enqueue(copy_jobs(2))  # t0 again (running) and t1
    assert [job.key for job in await q.claim("w2", limit=10)] == ["reg.example/repo:t1"]
    assert await q.succeed(first.id, "w1", "copied")
    assert [job.key for job in await q.claim("w2", limit=10)] == ["reg.example/repo:t0"]


async def test_heartbeat_extends_only_the_workers_own_running_jobs(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(3))
    mine = [job.id for job in await q.claim("w1", limit=2)]
    [theirs] = await q.claim("w2")
    clock.advance(20)
    owned = await q.heartbeat("w1", [*mine, theirs.id], lease_seconds=60)
    assert owned == set(mine)
    assert {job.lease_until for job in await q.jobs() if job.id in mine} == {clock.now + 60}


async def test_succeed_records_the_outcome(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [job] = await q.claim("w")
    clock.advance(5)
    digest = "sha256:" + "a" * 64
    assert await q.succeed(
        job.id, "w", "copied", digest=digest, bytes_written=10, bytes_read=20, duration=4.5
    )
    done = await get_job(q, job.id)
    assert (done.state, done.outcome, done.digest) == (JobState.SUCCEEDED, "copied", digest)
    assert (done.bytes_written, done.bytes_read, done.duration) == (10, 20, 4.5)
    assert (done.finished_at, done.lease_until) == (clock.now, None)


async def test_a_worker_that_lost_the_job_cannot_record_it(store: Store) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [job] = await q.claim("w1")
    assert not await q.succeed(job.id, "w2", "copied")
    assert await q.fail(job.id, "w2", "server_error", "boom") is None
    assert await q.cancel(job.id)
    assert not await q.succeed(job.id, "w1", "copied")
    assert (await get_job(q, job.id)).state is JobState.CANCELLED


async def test_fail_with_retry_at_requeues_until_attempts_run_out(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue([NewJob.listing("k", {}, max_attempts=2)])
    [job] = await q.claim("w")
    state = await q.fail(job.id, "w", "rate_limited", "429 from registry", retry_at=clock.now + 60)
    assert state is JobState.QUEUED
    queued = await get_job(q, job.id)
    assert (queued.due_at, queued.worker, queued.reason) == (clock.now + 60, None, "rate_limited")
    assert await q.claim("w") == []
    clock.advance(60)
    [again] = await q.claim("w")
    assert again.attempts == 2
    state = await q.fail(again.id, "w", "rate_limited", "429 again", retry_at=clock.now + 60)
    assert state is JobState.FAILED
    failed = await get_job(q, job.id)
    assert (failed.state, failed.reason, failed.error) == (
        JobState.FAILED,
        "rate_limited",
        "429 again",
    )


async def test_fail_without_retry_at_fails_and_bounds_the_reason(store: Store) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [job] = await q.claim("w")
    assert await q.fail(job.id, "w", "x" * 500, "m" * 10_000) is JobState.FAILED
    failed = await get_job(q, job.id)
    assert (len(failed.reason or ""), len(failed.error or "")) == (64, 2000)


async def test_a_retry_that_would_collide_with_a_queued_sibling_is_superseded(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [job] = await q.claim("w")
    sibling = (await q.enqueue(copy_jobs(1))).job_ids[0]
    state = await q.fail(job.id, "w", "server_error", "502", retry_at=clock.now + 5)
    assert state is JobState.CANCELLED
    superseded = await get_job(q, job.id)
    assert (superseded.reason, superseded.error) == ("superseded", "502")
    assert [j.id for j in await q.jobs(JobState.QUEUED)] == [sibling]


async def test_requeue_hands_jobs_back_without_counting_the_attempt(store: Store) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(2))
    claimed = await q.claim("w", limit=2)
    result = await q.requeue("w", [job.id for job in claimed])
    assert result.requeued == tuple(job.id for job in claimed)
    again = await q.claim("w", limit=2)
    assert [job.attempts for job in again] == [1, 1]


async def test_a_deferred_job_waits_until_due_and_keeps_its_last_attempt(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue([NewJob(JobKind.COPY, "reg.example/repo:t0", {}, max_attempts=1)])
    [job] = await q.claim("w")
    state = await q.defer(job.id, "w", clock.now + 60, "rate_limited", "paused for 60 s")
    assert state is JobState.QUEUED  # not failed, although its one attempt was claimed
    assert await q.claim("w") == []
    clock.advance(61)
    [again] = await q.claim("w")
    assert (again.id, again.attempts) == (job.id, 1)


async def test_reap_requeues_expired_leases_only(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(2))
    [stale] = await q.claim("dead", lease_seconds=10)
    [alive] = await q.claim("alive", lease_seconds=100)
    clock.advance(50)
    result = await q.reap()
    assert (result.requeued, result.superseded, result.failed) == ((stale.id,), (), ())
    assert (await get_job(q, alive.id)).state is JobState.RUNNING
    [again] = await q.claim("new")
    assert (again.id, again.attempts, again.worker) == (stale.id, 2, "new")
    assert not await q.succeed(stale.id, "dead", "copied")
    assert not await q.reap()


async def test_reap_supersedes_when_a_sibling_is_queued(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [stale] = await q.claim("dead", lease_seconds=10)
    sibling = (await q.enqueue(copy_jobs(1))).job_ids[0]
    result = await q.reap(now=clock.now + 11)
    assert (result.requeued, result.superseded) == ((), (stale.id,))
    assert [j.id for j in await q.jobs(JobState.QUEUED)] == [sibling]


async def test_reap_fails_a_job_whose_attempts_are_used_up(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue([NewJob.listing("k", {}, max_attempts=1)])
    [job] = await q.claim("dead", lease_seconds=10)
    result = await q.reap(now=clock.now + 11)
    assert result.failed == (job.id,)
    failed = await get_job(q, job.id)
    assert (failed.state, failed.reason) == (JobState.FAILED, "lease_expired")


async def test_cancel_ends_queued_and_running_jobs_only(store: Store) -> None:
    q = store.queue
    ids = (await q.enqueue(copy_jobs(2))).job_ids
    [running] = await q.claim("w")
    assert await q.cancel(ids[1])
    assert await q.cancel(running.id)
    assert not await q.cancel(running.id)
    assert (await q.counts_by_state())[JobState.CANCELLED] == 2


async def test_retry_resets_attempts_and_jumps_the_queue(store: Store, clock: FakeClock) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1, "a"))
    [job] = await q.claim("w")
    await q.fail(job.id, "w", "denied", "403")
    await q.enqueue(copy_jobs(1, "b"), priority=5)
    clock.advance(1)
    assert (await q.retry(job.id)).requeued == (job.id,)
    [first] = await q.claim("w")
    assert (first.id, first.attempts) == (job.id, 1)
    assert first.priority > 5


async def test_retry_of_a_job_whose_key_is_queued_again_supersedes_it(
    store: Store, clock: FakeClock
) -> None:
    q = store.queue
    await q.enqueue(copy_jobs(1))
    [job] = await q.claim("w")
    await q.fail(job.id, "w", "denied", "403")
    sibling = (await q.enqueue(copy_jobs(1), due_at=clock.now + 3600)).job_ids[0]
    result = await q.retry(job.id)
    assert (result.requeued, result.superseded) == ((), (job.id,))
    [hurried] = await q.claim("w")  # the queued sibling now runs at once, first in line
    assert hurried.id == sibling


async def test_retry_failed_retries_only_the_newest_failure_of_each_key(store: Store) -> None:
    q = store.queue
    for _ in range(2):  # two failures of t0; one of t1
        await q.enqueue(copy_jobs(1))
        [job] = await q.claim("w")
        await q.fail(job.id, "w", "denied", "403")
    await q.enqueue(copy_jobs(2))
    [t0, t1] = await q.claim("w", limit=2)
    await q.succeed(t0.id, "w", "copied")
    await q.fail(t1.id, "w", "denied", "403")
    result = await q.retry_failed()
    assert result.requeued == (t1.id,)  # t0's failures are history: t0 succeeded since
    assert len(await q.jobs(JobState.FAILED)) == 2


async def test_jobs_lists_newest_first_by_state_and_run(store: Store) -> None:
    q = store.queue
    run = await q.create_run("manual")
    await q.enqueue(copy_jobs(3, "a"), run)
    await q.enqueue(copy_jobs(2, "b"))
    assert [j.key for j in await q.jobs(limit=2)] == ["b:t1", "b:t0"]
    assert len(await q.jobs(run_id=run)) == 3
    assert await q.jobs(JobState.RUNNING) == []


async def test_oldest_queued_age_counts_from_the_due_time(store: Store, clock: FakeClock) -> None:
    q = store.queue
    assert await q.oldest_queued_age() is None
    await q.enqueue(copy_jobs(1, "a"))
    await q.enqueue(copy_jobs(1, "later"), due_at=clock.now + 1000)
    clock.advance(42)
    assert await q.oldest_queued_age() == 42


async def test_succeed_many_records_owned_jobs_and_their_tags_in_one_go(store: Store) -> None:
    q = store.queue
    run_id = await q.create_run("once")
    await q.enqueue(copy_jobs(3), run_id)
    await q.close_run(run_id)
    jobs = await q.claim("w1", limit=3)
    mine, lost, theirs = jobs
    await q.cancel(lost.id)  # an operator cancelled it: its success must not be recorded
    digest = "sha256:" + "c" * 64
    tag = TagUpdate("reg.example", "app", "t0", digest, "src.example/app:t0", "hub")
    done = await q.succeed_many(
        [
            Success(mine.id, "w1", "copied", digest=digest, bytes_written=10, tag=tag),
            Success(lost.id, "w1", "copied"),
            Success(theirs.id, "w2", "skipped"),  # not w2's job
        ]
    )
    assert done == {mine.id}
    recorded = await get_job(q, mine.id)
    assert (recorded.state, recorded.outcome, recorded.bytes_written) == (
        JobState.SUCCEEDED,
        "copied",
        10,
    )
    assert (await get_job(q, theirs.id)).state is JobState.RUNNING
    state = await store.tags.get("reg.example", "app", "t0")
    assert state is not None
    assert state.digest == digest
    await q.succeed_many([Success(theirs.id, "w1", "skipped")])
    run = await q.run(run_id)
    assert run is not None
    assert (run.status, run.jobs_succeeded, run.jobs_cancelled) == (RunStatus.SUCCEEDED, 2, 1)


async def test_a_cancelled_job_shows_its_reason_alone_in_the_jobs_table(store: Store) -> None:
    from mirrord.status import render_jobs

    q = store.queue
    [job_id] = (await q.enqueue(copy_jobs(1))).job_ids
    assert await q.cancel(job_id)
    [row] = render_jobs(await q.jobs()).splitlines()[1:]
    assert row.rstrip().endswith("cancelled")
    assert "None" not in row
