"""The job lifecycle verbs: enqueue, claim, heartbeat, succeed, fail, requeue, reap, cancel,
retry.

Every change of state is a conditional UPDATE (`WHERE state = … AND worker = …`), so a worker
that lost its lease, or a second reaper, changes nothing; the database's CHECKs, partial unique
indexes and transition trigger refuse anything else. Shared statements: transitions.py.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    String,
    Update,
    bindparam,
    case,
    exists,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.model import CopyRequest
from mirrord.store.db import Component
from mirrord.store.models import has_state, jobs
from mirrord.store.records import (
    CANCELLED_BY_USER,
    ERROR_MAX,
    LEASE_EXPIRED,
    REASON_MAX,
    EnqueueResult,
    Job,
    JobState,
    NewJob,
    RequeueResult,
    Success,
    bounded,
)
from mirrord.store.runs import complete_runs
from mirrord.store.tags import upsert_tags
from mirrord.store.transitions import (
    Requeue,
    finish,
    finish_and_complete,
    owned,
    retry,
    single_outcome,
)

J = jobs.c
_IS_QUEUED = has_state(J.state, JobState.QUEUED)  # uq_jobs_key_queued, named by ON CONFLICT
RETRY_PRIORITY = 100  # a retry the user asked for jumps the scheduled work
_KEYS_PER_STATEMENT = 500  # well under SQLite's bound-parameter limit


async def _adopt(
    conn: AsyncConnection, keys: Sequence[str], run_id: int, priority: int, now: float
) -> None:
    """Move the queued jobs of `keys` into run `run_id` (raising their priority to
    `priority`); a run left with nothing to wait for completes."""
    previous: set[int | None] = set()
    for start in range(0, len(keys), _KEYS_PER_STATEMENT):
        chunk = keys[start : start + _KEYS_PER_STATEMENT]
        theirs = (J.run_id.is_(None)) | (J.run_id != run_id)
        where = (_IS_QUEUED, J.key.in_(chunk), theirs)
        previous.update((await conn.execute(select(J.run_id).where(*where))).scalars())
        raised = case((J.priority < priority, priority), else_=J.priority)
        await conn.execute(update(jobs).where(*where).values(run_id=run_id, priority=raised))
    await complete_runs(conn, previous, now)


def _rows(
    new_jobs: Iterable[NewJob | CopyRequest],
    run_id: int | None,
    priority: int,
    due_at: float,
    now: float,
) -> tuple[list[dict[str, Any]], int]:
    """Insert parameters, one per key (the first wins), and the number of in-batch duplicates."""
    rows: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for item in new_jobs:
        job = NewJob.copy(item) if isinstance(item, CopyRequest) else item
        if job.key in rows:
            duplicates += 1
            continue
        rows[job.key] = {
            "kind": job.kind.value,
            "key": job.key,
            "source_name": job.source_name,
            "run_id": run_id,
            "payload": job.payload_text(),
            "state": JobState.QUEUED.value,
            "priority": priority,
            "due_at": due_at,
            "max_attempts": job.max_attempts,
            "created_at": now,
        }
    return list(rows.values()), duplicates


_SUCCEED_MANY = (
    update(jobs)
    .where(J.id == bindparam("b_id"), J.worker == bindparam("b_worker"))
    .where(has_state(J.state, JobState.RUNNING))
    .values(
        state=JobState.SUCCEEDED.value,
        finished_at=bindparam("b_now"),
        lease_until=None,
        outcome=bindparam("b_outcome"),
        digest=bindparam("b_digest"),
        bytes_written=bindparam("b_written"),
        bytes_read=bindparam("b_read"),
        duration=bindparam("b_duration"),
    )
)


def _success_params(success: Success, now: float) -> dict[str, Any]:
    return {
        "b_id": success.job_id,
        "b_worker": success.worker,
        "b_now": now,
        "b_outcome": bounded(success.outcome, REASON_MAX),
        "b_digest": success.digest,
        "b_written": success.bytes_written,
        "b_read": success.bytes_read,
        "b_duration": success.duration,
    }


class JobVerbs(Component):
    async def enqueue(
        self,
        new_jobs: Iterable[NewJob | CopyRequest],
        run_id: int | None = None,
        *,
        priority: int = 0,
        due_at: float | None = None,
    ) -> EnqueueResult:
        """Enqueue many jobs in one transaction. A key that already has a queued job gets no
        new one (counted in `duplicates`): with a `run_id`, that run adopts the queued job, so a
        run (and a one-shot sync waiting for it) covers every key it planned. A key that is
        only running gets a new queued job."""
        now = self._clock()
        rows, duplicates = _rows(new_jobs, run_id, priority, now if due_at is None else due_at, now)
        if not rows:
            return EnqueueResult((), duplicates)
        statement = (
            self._db.insert(jobs)
            .on_conflict_do_nothing(index_elements=[J.key], index_where=_IS_QUEUED)
            .returning(J.id, J.key)
        )

        async def work(conn: AsyncConnection) -> list[int]:
            inserted = {row.key: row.id for row in await conn.execute(statement, rows)}
            queued_already = [row["key"] for row in rows if row["key"] not in inserted]
            if run_id is not None and queued_already:
                await _adopt(conn, queued_already, run_id, priority, now)
            return list(inserted.values())

        ids = await self._db.write(work, "enqueueing jobs")
        return EnqueueResult(tuple(sorted(ids)), duplicates + len(rows) - len(ids))

    async def claim(self, worker: str, limit: int = 1, lease_seconds: float = 60.0) -> list[Job]:
        """Atomically take up to `limit` due jobs, highest priority then earliest due first,
        skipping keys that already have a running job. Counts an attempt on each."""
        now = self._clock()
        params = {
            "claim_worker": worker,
            "claim_limit": limit,
            "claim_lease": now + lease_seconds,
            "claim_now": now,
        }

        async def work(conn: AsyncConnection) -> list[Job]:
            result = await conn.execute(self._claim_statement, params)
            return [Job.from_row(row) for row in result.mappings()]

        claimed = await self._db.write(work, "claiming jobs")
        return sorted(claimed, key=lambda job: (-job.priority, job.due_at, job.id))

    @property
    def _queued_for_claim(self) -> ColumnElement[bool]:
        """`state = 'queued'`; on SQLite marked as true for most rows, so that the planner
        walks ix_jobs_claim in the claim's order and stops at `limit`, instead of finding the
        queued jobs through the (state, finished_at) index and sorting them all."""
        if self._db.is_sqlite:
            return func.likelihood(_IS_QUEUED, literal_column("0.95"))
        return _IS_QUEUED

    @functools.cached_property
    def _claim_statement(self) -> Update:
        """Built once: a claim runs every few milliseconds on a busy worker, and building
        this statement costs more than executing it. Parameters: claim_worker, claim_limit,
        claim_lease (lease end), claim_now."""
        now = bindparam("claim_now", type_=Float)
        running = jobs.alias("running")
        # NOT IN rather than NOT EXISTS: both databases then build the (small) set of running
        # keys once and probe it, whatever their statistics say; on a freshly filled, never
        # analysed table PostgreSQL planned NOT EXISTS as a nested loop, 40x slower.
        running_keys = select(running.c.key).where(has_state(running.c.state, JobState.RUNNING))
        candidates = (
            select(J.id)
            .where(self._queued_for_claim, J.due_at <= now, J.key.not_in(running_keys))
            .order_by(J.priority.desc(), J.due_at, J.id)
            .limit(bindparam("claim_limit", type_=Integer))
        )
        if self._db.is_postgres:
            # Concurrent claimers pass over each other's candidates instead of waiting on them.
            # SQLite needs nothing: BEGIN IMMEDIATE lets one writer in at a time.
            candidates = candidates.with_for_update(skip_locked=True, of=jobs)
        chosen = candidates.cte("chosen")
        return (
            update(jobs)
            .where(J.id.in_(select(chosen.c.id)), _IS_QUEUED)
            .values(state=JobState.RUNNING.value, worker=bindparam("claim_worker", type_=String))
            .values(lease_until=bindparam("claim_lease", type_=Float))
            .values(attempts=J.attempts + 1, started_at=now)
            .returning(*jobs.c)
        )

    async def heartbeat(
        self, worker: str, job_ids: Sequence[int], lease_seconds: float
    ) -> set[int]:
        """Extend the leases of a worker's running jobs; returns the ids it still owns."""
        if not job_ids:
            return set()
        statement = (
            update(jobs)
            .where(owned(job_ids, worker))
            .values(lease_until=self._clock() + lease_seconds)
            .returning(J.id)
        )

        async def work(conn: AsyncConnection) -> set[int]:
            return set((await conn.execute(statement)).scalars())

        return await self._db.write(work, "renewing leases")

    async def succeed(
        self,
        job_id: int,
        worker: str,
        outcome: str,
        *,
        digest: str | None = None,
        bytes_written: int = 0,
        bytes_read: int = 0,
        duration: float | None = None,
    ) -> bool:
        """Record success; False if the worker no longer owns the job (lease lost, cancelled)."""
        now = self._clock()
        statement = finish(
            owned([job_id], worker),
            JobState.SUCCEEDED,
            now,
            outcome=bounded(outcome, REASON_MAX),
            digest=digest,
            bytes_written=bytes_written,
            bytes_read=bytes_read,
            duration=duration,
        )

        async def work(conn: AsyncConnection) -> bool:
            return bool(await finish_and_complete(conn, statement, now))

        return await self._db.write(work, "recording a success")

    async def succeed_many(self, successes: Sequence[Success]) -> set[int]:
        """Record many successes, and their tag updates, in one transaction; returns the ids
        recorded (a job its worker no longer owns is left alone, its tag update too).

        One SELECT finds the jobs still owned, one executemany UPDATE finishes them: a
        statement per job would cost a driver round trip each."""
        if not successes:
            return set()
        now = self._clock()

        async def work(conn: AsyncConnection) -> set[int]:
            ids = [s.job_id for s in successes]
            rows = await conn.execute(
                select(J.id, J.worker, J.run_id).where(
                    J.id.in_(ids), has_state(J.state, JobState.RUNNING)
                )
            )
            owners = {row.id: (row.worker, row.run_id) for row in rows}
            mine = [s for s in successes if owners.get(s.job_id, ("",))[0] == s.worker]
            if mine:
                await conn.execute(_SUCCEED_MANY, [_success_params(s, now) for s in mine])
            tags = [s.tag for s in mine if s.tag is not None]
            await upsert_tags(conn, self._db, tags, now)
            await complete_runs(conn, {owners[s.job_id][1] for s in mine}, now)
            return {s.job_id for s in mine}

        return await self._db.write(work, "recording successes")

    async def fail(
        self, job_id: int, worker: str, reason: str, message: str, retry_at: float | None = None
    ) -> JobState | None:
        """Record a failed attempt. With `retry_at` and attempts left the job is queued again,
        due at `retry_at` (superseded instead if a sibling with its key is already queued);
        otherwise it fails. Returns the job's new state, None if the worker no longer owns it."""
        now = self._clock()
        where = owned([job_id], worker)
        reason, message = bounded(reason, REASON_MAX) or "", bounded(message, ERROR_MAX) or ""
        final = finish(where, JobState.FAILED, now, reason=reason, error=message)
        again = Requeue(where, now if retry_at is None else retry_at, reason, message)

        async def work(conn: AsyncConnection) -> JobState | None:
            if retry_at is not None:
                return single_outcome(await again.run(conn, now))
            return JobState.FAILED if await finish_and_complete(conn, final, now) else None

        return await self._db.write(work, "recording a failure")

    async def defer(
        self, job_id: int, worker: str, due_at: float, reason: str, message: str
    ) -> JobState | None:
        """Queue a running job again, due at `due_at`, the attempt not counted (the registry
        asked for a pause; nothing failed). Returns its new state, None if not owned."""
        reason, message = bounded(reason, REASON_MAX) or "", bounded(message, ERROR_MAX) or ""
        where = owned([job_id], worker)
        later = Requeue(where, due_at, reason, message, refund_attempt=True, fail_exhausted=False)
        now = self._clock()
        result = await self._db.write(lambda conn: later.run(conn, now), "deferring a job")
        return single_outcome(result)

    async def requeue(self, worker: str, job_ids: Sequence[int]) -> RequeueResult:
        """Hand a draining worker's jobs back, the attempt not counted."""
        if not job_ids:
            return RequeueResult()
        now = self._clock()
        drain = Requeue(owned(job_ids, worker), now, refund_attempt=True, fail_exhausted=False)
        return await self._db.write(lambda conn: drain.run(conn, now), "requeueing jobs")

    async def reap(self, now: float | None = None) -> RequeueResult:
        """Requeue running jobs whose lease expired (their worker died or hung). Safe to run
        from several daemons at once: each job is taken back by exactly one of them."""
        now = self._clock() if now is None else now
        expired = has_state(J.state, JobState.RUNNING) & (J.lease_until < now)
        reap = Requeue(expired, now, LEASE_EXPIRED, "lease expired: the worker stopped renewing it")
        return await self._db.write(lambda conn: reap.run(conn, now), "reaping expired leases")

    async def reap_workers(self, workers: Sequence[str]) -> RequeueResult:
        """Requeue the running jobs of workers known to be dead, without waiting for their
        leases (a daemon restarted on the same host knows its previous process is gone)."""
        if not workers:
            return RequeueResult()
        now = self._clock()
        theirs = has_state(J.state, JobState.RUNNING) & J.worker.in_(list(workers))
        reap = Requeue(theirs, now, LEASE_EXPIRED, "the worker process died")
        return await self._db.write(lambda conn: reap.run(conn, now), "reaping dead workers")

    async def running_workers(self) -> set[str]:
        """Workers that hold running jobs."""
        statement = select(J.worker).where(has_state(J.state, JobState.RUNNING)).distinct()

        async def work(conn: AsyncConnection) -> set[str]:
            return {w for w in (await conn.execute(statement)).scalars() if w}

        return await self._db.read(work, "listing workers")

    async def cancelled_among(self, job_ids: Sequence[int]) -> set[int]:
        """Which of these jobs are cancelled (a running worker's way to hear of `cancel`)."""
        statement = select(J.id).where(J.id.in_(job_ids), has_state(J.state, JobState.CANCELLED))

        async def work(conn: AsyncConnection) -> set[int]:
            return set((await conn.execute(statement)).scalars())

        return await self._db.read(work, "looking for cancelled jobs")

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job (a running job's worker then fails to record it)."""
        now = self._clock()
        active = (J.id == job_id) & has_state(J.state, JobState.QUEUED, JobState.RUNNING)
        statement = finish(active, JobState.CANCELLED, now, reason=CANCELLED_BY_USER)

        async def work(conn: AsyncConnection) -> bool:
            return bool(await finish_and_complete(conn, statement, now))

        return await self._db.write(work, "cancelling a job")

    async def retry(self, job_id: int, priority: int = RETRY_PRIORITY) -> RequeueResult:
        """Queue a failed or cancelled job again now, attempts reset, at high priority."""
        where = (J.id == job_id) & has_state(J.state, JobState.FAILED, JobState.CANCELLED)
        now = self._clock()
        return await self._db.write(lambda conn: retry(conn, where, priority, now), "retrying")

    async def retry_failed(
        self, run_id: int | None = None, priority: int = RETRY_PRIORITY
    ) -> RequeueResult:
        """Retry every failed job that is the newest job of its key (optionally of one run):
        older failures of a key are history."""
        newer = jobs.alias("newer")
        where = has_state(J.state, JobState.FAILED) & ~exists().where(
            newer.c.key == J.key, newer.c.id > J.id
        )
        if run_id is not None:
            where &= J.run_id == run_id
        now = self._clock()
        return await self._db.write(lambda conn: retry(conn, where, priority, now), "retrying")
