"""Read-only views of the queue for the CLI, the status API and the metrics."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Component
from mirrord.store.models import has_state, jobs, runs
from mirrord.store.records import ACTIVE_STATES, Job, JobState, Run, RunStatus, SourceStatus
from mirrord.store.runs import recent_runs

J, R = jobs.c, runs.c


@dataclass(frozen=True)
class Overview:
    """What `mirrord status` and /api/status show, read from one snapshot."""

    counts: dict[JobState, int]
    failed: list[Job]
    oldest_queued_seconds: float | None
    runs: list[Run]
    sources: list[SourceStatus]


class StatusVerbs(Component):
    async def overview(self, runs: int = 5, failed: int = 20) -> Overview:
        """Queue counts, recent failures, recent runs and sources in one read transaction, so
        a run shown finished never appears beside its jobs still running."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> Overview:
            return Overview(
                counts=await _counts(conn),
                failed=await _jobs(conn, JobState.FAILED, failed, None),
                oldest_queued_seconds=await _oldest_queued_age(conn, now),
                runs=await recent_runs(conn, runs),
                sources=await _source_status(conn),
            )

        return await self._db.read(work, "reading the status")

    async def job(self, job_id: int) -> Job | None:
        async def work(conn: AsyncConnection) -> Job | None:
            row = (await conn.execute(select(jobs).where(J.id == job_id))).mappings().first()
            return None if row is None else Job.from_row(row)

        return await self._db.read(work, "reading a job")

    async def jobs(
        self, state: JobState | None = None, limit: int = 100, run_id: int | None = None
    ) -> list[Job]:
        """Jobs, newest first, optionally of one state and/or one run."""
        return await self._db.read(lambda conn: _jobs(conn, state, limit, run_id), "listing jobs")

    async def counts_by_state(self) -> dict[JobState, int]:
        """The number of jobs in each state (every state present, zeros included)."""
        return await self._db.read(_counts, "counting jobs")

    async def oldest_queued_age(self, now: float | None = None) -> float | None:
        """Seconds the longest-waiting due job has been due; None when nothing is waiting."""
        at = self._clock() if now is None else now
        return await self._db.read(
            lambda conn: _oldest_queued_age(conn, at), "reading the queue age"
        )

    async def last_success_by_source(self) -> dict[str, float]:
        """When a job of each source last succeeded."""
        statement = (
            select(J.source_name, func.max(J.finished_at))
            .where(has_state(J.state, JobState.SUCCEEDED))
            .group_by(J.source_name)
        )

        async def work(conn: AsyncConnection) -> dict[str, float]:
            return dict((await conn.execute(statement)).all())

        return await self._db.read(work, "reading the last successes")

    async def source_status(self) -> list[SourceStatus]:
        """Per source: the end of its last successful run, its last run, its pending jobs.

        A run counts as a success for a source when none of that source's jobs in it failed,
        so one broken source does not hide the health of the others."""
        return await self._db.read(_source_status, "reading the source status")


async def _source_status(conn: AsyncConnection) -> list[SourceStatus]:
    pending: dict[str, int] = dict(
        (
            await conn.execute(
                select(J.source_name, func.count())
                .where(has_state(J.state, *ACTIVE_STATES))
                .group_by(J.source_name)
            )
        ).all()
    )
    last_run: dict[str, int] = dict(
        (
            await conn.execute(
                select(J.source_name, func.max(J.run_id))
                .where(J.run_id.is_not(None))
                .group_by(J.source_name)
            )
        ).all()
    )
    last_success = await _last_clean_run_end(conn)
    run_status = await _source_run_status(conn, last_run)
    names = sorted({*pending, *last_run})
    return [
        SourceStatus(
            source_name=name,
            last_success_at=last_success.get(name),
            last_run_id=last_run.get(name),
            last_run_status=run_status.get(name),
            pending=pending.get(name, 0),
        )
        for name in names
    ]


def _failed_jobs() -> ColumnElement[int]:
    return func.sum(case((has_state(J.state, JobState.FAILED), 1), else_=0))


def _unfinished_jobs() -> ColumnElement[int]:
    return func.sum(case((has_state(J.state, JobState.FAILED, *ACTIVE_STATES), 1), else_=0))


async def _last_clean_run_end(conn: AsyncConnection) -> dict[str, float]:
    """Per source, when the newest completed (not cancelled) run had all its jobs of that
    source done: the run's end, or later if a failed job of it was retried and succeeded (a
    run with a job still failed, or retried and not yet done, does not count)."""
    last_job = func.max(J.finished_at)
    done_at = case((last_job > R.finished_at, last_job), else_=R.finished_at)
    per_run = (
        select(J.source_name.label("source_name"), done_at.label("finished_at"))
        .join(runs, J.run_id == R.id)
        .where(R.status.in_([RunStatus.SUCCEEDED.value, RunStatus.FAILED.value]))
        .group_by(J.source_name, R.id, R.finished_at)
        .having(_unfinished_jobs() == 0)
        .subquery()
    )
    statement = select(per_run.c.source_name, func.max(per_run.c.finished_at)).group_by(
        per_run.c.source_name
    )
    return dict((await conn.execute(statement)).all())


async def _source_run_status(
    conn: AsyncConnection, last_run: dict[str, int]
) -> dict[str, RunStatus]:
    """Each source's status in its last run: the run's, except that a finished run counts as
    succeeded for a source none of whose jobs failed."""
    if not last_run:
        return {}
    statement = (
        select(J.source_name, J.run_id, R.status, _failed_jobs())
        .join(runs, J.run_id == R.id)
        .where(J.run_id.in_(set(last_run.values())))
        .group_by(J.source_name, J.run_id, R.status)
    )
    result: dict[str, RunStatus] = {}
    for name, run_id, status, failed in (await conn.execute(statement)).all():
        if last_run.get(name) == run_id:
            result[name] = _status_for_source(RunStatus(status), failed)
    return result


def _status_for_source(status: RunStatus, failed: int) -> RunStatus:
    if status in (RunStatus.RUNNING, RunStatus.CANCELLED):
        return status
    return RunStatus.FAILED if failed else RunStatus.SUCCEEDED


async def _jobs(
    conn: AsyncConnection, state: JobState | None, limit: int, run_id: int | None
) -> list[Job]:
    statement = select(jobs).order_by(J.id.desc()).limit(limit)
    if state is not None:
        statement = statement.where(has_state(J.state, JobState(state)))
    if run_id is not None:
        statement = statement.where(J.run_id == run_id)
    return [Job.from_row(row) for row in (await conn.execute(statement)).mappings()]


async def _counts(conn: AsyncConnection) -> dict[JobState, int]:
    counts = dict.fromkeys(JobState, 0)
    statement = select(J.state, func.count()).group_by(J.state)
    for state, count in (await conn.execute(statement)).all():
        counts[JobState(state)] = count
    return counts


async def _oldest_queued_age(conn: AsyncConnection, now: float) -> float | None:
    statement = select(func.min(J.due_at)).where(
        has_state(J.state, JobState.QUEUED), J.due_at <= now
    )
    oldest = (await conn.execute(statement)).scalar_one_or_none()
    return None if oldest is None else max(0.0, now - oldest)
