"""The job lifecycle: enqueue, claim, heartbeat, succeed, fail, requeue, reap, cancel, retry.

Every change of state is a conditional UPDATE (`WHERE state = … AND worker = …`), so a worker
that lost its lease, or a second reaper, changes nothing; the database's CHECKs, partial unique
indexes and transition trigger refuse anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Update, case, exists, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.model import CopyRequest
from mirrord.store.db import Component
from mirrord.store.models import has_state, jobs
from mirrord.store.records import (
    CANCELLED_BY_USER,
    ERROR_MAX,
    LEASE_EXPIRED,
    REASON_MAX,
    SUPERSEDED,
    EnqueueResult,
    Job,
    JobState,
    NewJob,
    RequeueResult,
    bounded,
)
from mirrord.store.runs import complete_runs

J = jobs.c
QUEUED, RUNNING = JobState.QUEUED.value, JobState.RUNNING.value
SUCCEEDED, FAILED, CANCELLED = (
    JobState.SUCCEEDED.value,
    JobState.FAILED.value,
    JobState.CANCELLED.value,
)
_IS_QUEUED = has_state(J.state, JobState.QUEUED)  # uq_jobs_key_queued, for ON CONFLICT
RETRY_PRIORITY = 100  # a retry the user asked for jumps the scheduled work


def _sibling_queued() -> ColumnElement[bool]:
    """Another job with this row's key is queued (it would take this row's place)."""
    sibling = jobs.alias("sibling")
    return exists().where(
        sibling.c.key == J.key, has_state(sibling.c.state, JobState.QUEUED), sibling.c.id != J.id
    )


def _owned(job_ids: Sequence[int], worker: str) -> ColumnElement[bool]:
    return J.id.in_(job_ids) & (J.worker == worker) & has_state(J.state, JobState.RUNNING)


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
            "state": QUEUED,
            "priority": priority,
            "due_at": due_at,
            "max_attempts": job.max_attempts,
            "created_at": now,
        }
    return list(rows.values()), duplicates


@dataclass(frozen=True, slots=True)
class _Requeue:
    """Put running jobs back in the queue: superseded where a queued sibling exists, failed where
    attempts are used up (if `fail_exhausted`), queued again otherwise."""

    where: ColumnElement[bool]  # must select running jobs only
    due_at: float
    reason: str | None = None
    error: str | None = None
    refund_attempt: bool = False
    fail_exhausted: bool = True

    def _note(self) -> dict[str, Any]:
        note: dict[str, Any] = {}
        if self.reason is not None:
            note["reason"] = self.reason
        if self.error is not None:
            note["error"] = self.error
        return note

    def supersede(self, now: float) -> Update:
        return _finish(
            self.where & _sibling_queued(), CANCELLED, now, {**self._note(), "reason": SUPERSEDED}
        )

    def fail(self, now: float) -> Update:
        exhausted = self.where & (J.attempts >= J.max_attempts)
        return _finish(exhausted, FAILED, now, self._note())

    def requeue(self) -> Update:
        attempts = J.attempts - 1 if self.refund_attempt else J.attempts
        values = {"state": QUEUED, "due_at": self.due_at, "worker": None, "lease_until": None}
        return (
            update(jobs)
            .where(self.where)
            .values(attempts=attempts, **values, **self._note())
            .returning(J.id)
        )

    async def run(self, conn: AsyncConnection, now: float) -> RequeueResult:
        superseded = (await conn.execute(self.supersede(now))).all()
        failed = (await conn.execute(self.fail(now))).all() if self.fail_exhausted else []
        requeued = (await conn.execute(self.requeue())).scalars().all()
        await complete_runs(conn, {row.run_id for row in [*superseded, *failed]}, now)
        return RequeueResult(
            requeued=tuple(sorted(requeued)),
            superseded=tuple(sorted(row.id for row in superseded)),
            failed=tuple(sorted(row.id for row in failed)),
        )


def _finish(where: ColumnElement[bool], state: str, now: float, values: dict[str, Any]) -> Update:
    """Move the selected jobs to a terminal state."""
    return (
        update(jobs)
        .where(where)
        .values(state=state, finished_at=now, lease_until=None, **values)
        .returning(J.id, J.run_id)
    )


class JobVerbs(Component):
    async def enqueue(
        self,
        new_jobs: Iterable[NewJob | CopyRequest],
        run_id: int | None = None,
        *,
        priority: int = 0,
        due_at: float | None = None,
    ) -> EnqueueResult:
        """Enqueue many jobs in one transaction. A key that already has a queued job is a no-op,
        counted in `duplicates`; a key that is only running gets a new queued job."""
        now = self._clock()
        rows, duplicates = _rows(new_jobs, run_id, priority, now if due_at is None else due_at, now)
        if not rows:
            return EnqueueResult((), duplicates)
        statement = (
            self._db.insert(jobs)
            .on_conflict_do_nothing(index_elements=[J.key], index_where=_IS_QUEUED)
            .returning(J.id)
        )

        async def work(conn: AsyncConnection) -> list[int]:
            return list((await conn.execute(statement, rows)).scalars())

        ids = await self._db.write(work, "enqueueing jobs")
        return EnqueueResult(tuple(sorted(ids)), duplicates + len(rows) - len(ids))

    async def claim(self, worker: str, limit: int = 1, lease_seconds: float = 60.0) -> list[Job]:
        """Atomically take up to `limit` due jobs, highest priority then earliest due first,
        skipping keys that already have a running job. Counts an attempt on each."""
        now = self._clock()
        statement = self._claim_statement(worker, limit, now + lease_seconds, now)

        async def work(conn: AsyncConnection) -> list[Job]:
            return [Job.from_row(row) for row in (await conn.execute(statement)).mappings()]

        claimed = await self._db.write(work, "claiming jobs")
        return sorted(claimed, key=lambda job: (-job.priority, job.due_at, job.id))

    def _claim_statement(self, worker: str, limit: int, lease_until: float, now: float) -> Update:
        running = jobs.alias("running")
        # NOT IN rather than NOT EXISTS: both databases then build the (small) set of running
        # keys once and probe it, whatever their statistics say; on a freshly filled, never
        # analysed table PostgreSQL planned NOT EXISTS as a nested loop, 40x slower.
        running_keys = select(running.c.key).where(has_state(running.c.state, JobState.RUNNING))
        candidates = (
            select(J.id)
            .where(has_state(J.state, JobState.QUEUED), J.due_at <= now)
            .where(J.key.not_in(running_keys))
            .order_by(J.priority.desc(), J.due_at, J.id)
            .limit(limit)
        )
        if self._db.is_postgres:
            # Concurrent claimers pass over each other's candidates instead of waiting on them.
            # SQLite needs nothing: BEGIN IMMEDIATE lets one writer in at a time.
            candidates = candidates.with_for_update(skip_locked=True, of=jobs)
        chosen = candidates.cte("chosen")
        return (
            update(jobs)
            .where(J.id.in_(select(chosen.c.id)), has_state(J.state, JobState.QUEUED))
            .values(
                state=RUNNING,
                worker=worker,
                lease_until=lease_until,
                attempts=J.attempts + 1,
                started_at=now,
            )
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
            .where(_owned(job_ids, worker))
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
        values = {
            "outcome": bounded(outcome, REASON_MAX),
            "digest": digest,
            "bytes_written": bytes_written,
            "bytes_read": bytes_read,
            "duration": duration,
        }
        statement = _finish(_owned([job_id], worker), SUCCEEDED, now, values)

        async def work(conn: AsyncConnection) -> bool:
            row = (await conn.execute(statement)).first()
            if row is not None:
                await complete_runs(conn, {row.run_id}, now)
            return row is not None

        return await self._db.write(work, "recording a success")

    async def fail(
        self, job_id: int, worker: str, reason: str, message: str, retry_at: float | None = None
    ) -> JobState | None:
        """Record a failed attempt. With `retry_at` and attempts left the job is queued again,
        due at `retry_at` (superseded instead if a sibling with its key is already queued);
        otherwise it fails. Returns the job's new state, None if the worker no longer owns it."""
        now = self._clock()
        note = {"reason": bounded(reason, REASON_MAX), "error": bounded(message, ERROR_MAX)}
        where = _owned([job_id], worker)
        if retry_at is None:
            statement = _finish(where, FAILED, now, note)

            async def work(conn: AsyncConnection) -> JobState | None:
                row = (await conn.execute(statement)).first()
                if row is None:
                    return None
                await complete_runs(conn, {row.run_id}, now)
                return JobState.FAILED

        else:
            requeue = _Requeue(where, retry_at, note["reason"], note["error"])

            async def work(conn: AsyncConnection) -> JobState | None:
                return _single_outcome(await requeue.run(conn, now))

        return await self._db.write(work, "recording a failure")

    async def requeue(self, worker: str, job_ids: Sequence[int]) -> RequeueResult:
        """Hand a draining worker's jobs back, the attempt not counted."""
        if not job_ids:
            return RequeueResult()
        now = self._clock()
        requeue = _Requeue(_owned(job_ids, worker), now, refund_attempt=True, fail_exhausted=False)
        return await self._db.write(lambda conn: requeue.run(conn, now), "requeueing jobs")

    async def reap(self, now: float | None = None) -> RequeueResult:
        """Requeue running jobs whose lease expired (their worker died or hung). Safe to run
        from several daemons at once: each job is taken back by exactly one of them."""
        now = self._clock() if now is None else now
        expired = has_state(J.state, JobState.RUNNING) & (J.lease_until < now)
        requeue = _Requeue(
            expired, now, LEASE_EXPIRED, "lease expired: the worker stopped renewing it"
        )
        return await self._db.write(lambda conn: requeue.run(conn, now), "reaping expired leases")

    async def cancel(self, job_id: int) -> bool:
        """Cancel a queued or running job (a running job's worker then fails to record it)."""
        now = self._clock()
        active = (J.id == job_id) & has_state(J.state, JobState.QUEUED, JobState.RUNNING)
        statement = _finish(active, CANCELLED, now, {"reason": CANCELLED_BY_USER})

        async def work(conn: AsyncConnection) -> bool:
            row = (await conn.execute(statement)).first()
            if row is not None:
                await complete_runs(conn, {row.run_id}, now)
            return row is not None

        return await self._db.write(work, "cancelling a job")

    async def retry(self, job_id: int, priority: int = RETRY_PRIORITY) -> RequeueResult:
        """Queue a failed or cancelled job again now, attempts reset, at high priority."""
        where = (J.id == job_id) & has_state(J.state, JobState.FAILED, JobState.CANCELLED)
        return await self._retry(where, priority)

    async def retry_failed(
        self, run_id: int | None = None, priority: int = RETRY_PRIORITY
    ) -> RequeueResult:
        """Retry every failed job that is the newest job of its key (optionally of one run)."""
        newer = jobs.alias("newer")
        where = has_state(J.state, JobState.FAILED) & ~exists().where(
            newer.c.key == J.key, newer.c.id > J.id
        )
        if run_id is not None:
            where &= J.run_id == run_id
        return await self._retry(where, priority)

    async def _retry(self, where: ColumnElement[bool], priority: int) -> RequeueResult:
        now = self._clock()

        async def work(conn: AsyncConnection) -> RequeueResult:
            superseded = await _supersede_retries(conn, where, priority, now)
            requeued = await conn.execute(
                update(jobs)
                .where(where & ~_sibling_queued())
                .values(
                    state=QUEUED,
                    attempts=0,
                    priority=priority,
                    due_at=now,
                    worker=None,
                    lease_until=None,
                    finished_at=None,
                )
                .returning(J.id)
            )
            return RequeueResult(requeued=tuple(sorted(requeued.scalars())), superseded=superseded)

        return await self._db.write(work, "retrying jobs")


async def _supersede_retries(
    conn: AsyncConnection, where: ColumnElement[bool], priority: int, now: float
) -> tuple[int, ...]:
    """Retries whose key is already queued are superseded; the queued job is hurried instead."""
    rows = (
        await conn.execute(
            update(jobs)
            .where(where & _sibling_queued())
            .values(state=CANCELLED, reason=SUPERSEDED)
            .returning(J.id, J.key)
        )
    ).all()
    if rows:
        await conn.execute(
            update(jobs)
            .where(J.key.in_({row.key for row in rows}), has_state(J.state, JobState.QUEUED))
            .values(
                priority=case((J.priority < priority, priority), else_=J.priority),
                due_at=case((J.due_at > now, now), else_=J.due_at),
            )
        )
    return tuple(sorted(row.id for row in rows))


def _single_outcome(result: RequeueResult) -> JobState | None:
    if result.requeued:
        return JobState.QUEUED
    if result.superseded:
        return JobState.CANCELLED
    if result.failed:
        return JobState.FAILED
    return None
