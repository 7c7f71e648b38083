"""The state changes the job verbs share, as SQL: finish, requeue-or-supersede, retry.

Each is a conditional UPDATE over a set of rows (`where`), so one statement serves one job or
every expired lease, and a row that has moved on in the meantime is simply not matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Row, Update, case, exists, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.models import has_state, jobs
from mirrord.store.records import SUPERSEDED, JobState, RequeueResult
from mirrord.store.runs import complete_runs

J = jobs.c
QUEUED, FAILED, CANCELLED = JobState.QUEUED.value, JobState.FAILED.value, JobState.CANCELLED.value


def owned(job_ids: Sequence[int], worker: str) -> ColumnElement[bool]:
    """The jobs among `job_ids` that `worker` is running."""
    return J.id.in_(job_ids) & (J.worker == worker) & has_state(J.state, JobState.RUNNING)


def sibling_queued() -> ColumnElement[bool]:
    """Another job with this row's key is queued (it would take this row's place)."""
    sibling = jobs.alias("sibling")
    return exists().where(
        sibling.c.key == J.key, has_state(sibling.c.state, JobState.QUEUED), sibling.c.id != J.id
    )


def finish(where: ColumnElement[bool], state: JobState, now: float, **values: Any) -> Update:
    """Move the selected jobs to a terminal state; returns their ids and runs."""
    return (
        update(jobs)
        .where(where)
        .values(state=state.value, finished_at=now, lease_until=None, **values)
        .returning(J.id, J.run_id)
    )


async def finish_and_complete(
    conn: AsyncConnection, statement: Update, now: float
) -> list[Row[Any]]:
    """Run a `finish` statement, then complete the runs it may have completed."""
    rows = list((await conn.execute(statement)).all())
    await complete_runs(conn, {row.run_id for row in rows}, now)
    return rows


@dataclass(frozen=True, slots=True)
class Requeue:
    """Put running jobs back in the queue: superseded where a queued sibling exists, failed where
    attempts are used up (if `fail_exhausted`), queued again, due at `due_at`, otherwise."""

    where: ColumnElement[bool]  # must select running jobs only
    due_at: float
    reason: str | None = None
    error: str | None = None
    refund_attempt: bool = False  # a graceful drain: the attempt does not count
    fail_exhausted: bool = True

    def _note(self) -> dict[str, Any]:
        note = {"reason": self.reason, "error": self.error}
        return {name: value for name, value in note.items() if value is not None}

    def _requeue(self) -> Update:
        attempts = J.attempts - 1 if self.refund_attempt else J.attempts
        return (
            update(jobs)
            .where(self.where)
            .values(state=QUEUED, due_at=self.due_at, worker=None, lease_until=None)
            .values(attempts=attempts, **self._note())
            .returning(J.id)
        )

    async def run(self, conn: AsyncConnection, now: float) -> RequeueResult:
        note = self._note()
        supersede = self.where & sibling_queued()
        superseded = await finish_and_complete(
            conn, finish(supersede, JobState.CANCELLED, now, **{**note, "reason": SUPERSEDED}), now
        )
        failed: list[Row[Any]] = []
        if self.fail_exhausted:
            exhausted = self.where & (J.attempts >= J.max_attempts)
            failed = await finish_and_complete(
                conn, finish(exhausted, JobState.FAILED, now, **note), now
            )
        requeued = (await conn.execute(self._requeue())).scalars().all()
        return RequeueResult(
            requeued=tuple(sorted(requeued)),
            superseded=tuple(sorted(row.id for row in superseded)),
            failed=tuple(sorted(row.id for row in failed)),
        )


def single_outcome(result: RequeueResult) -> JobState | None:
    """The new state of the one job a Requeue was run for (None: it was not matched)."""
    if result.requeued:
        return JobState.QUEUED
    if result.superseded:
        return JobState.CANCELLED
    if result.failed:
        return JobState.FAILED
    return None


async def retry(
    conn: AsyncConnection, where: ColumnElement[bool], priority: int, now: float
) -> RequeueResult:
    """Queue failed or cancelled jobs again, attempts reset. A job whose key is already queued is
    superseded instead, and that queued sibling hurried to `priority`, due now."""
    superseded = (
        await conn.execute(
            update(jobs)
            .where(where & sibling_queued())
            .values(state=CANCELLED, reason=SUPERSEDED)
            .returning(J.id, J.key)
        )
    ).all()
    if superseded:
        await conn.execute(
            update(jobs)
            .where(J.key.in_({row.key for row in superseded}), has_state(J.state, JobState.QUEUED))
            .values(
                priority=case((J.priority < priority, priority), else_=J.priority),
                due_at=case((J.due_at > now, now), else_=J.due_at),
            )
        )
    requeued = await conn.execute(
        update(jobs)
        .where(where & ~sibling_queued())
        .values(state=QUEUED, attempts=0, priority=priority, due_at=now)
        .values(worker=None, lease_until=None, finished_at=None)
        .returning(J.id)
    )
    return RequeueResult(
        requeued=tuple(sorted(requeued.scalars())),
        superseded=tuple(sorted(row.id for row in superseded)),
    )
