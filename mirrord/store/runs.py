"""Runs (one scheduler tick, one `sync --once`, one CLI command) and history retention.

A run is *closed* once planning has enqueued all its jobs, and it *completes* by itself, in the
same transaction as the change that makes its last job terminal: succeeded when none of its
jobs failed, failed otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, Table, case, delete, exists, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Component
from mirrord.store.models import has_state, jobs, runs
from mirrord.store.records import (
    ACTIVE_STATES,
    CANCELLED_BY_USER,
    TERMINAL_STATES,
    FailedJob,
    JobState,
    PruneResult,
    Run,
    RunStatus,
    RunSummary,
    RunTrigger,
)

J, R = jobs.c, runs.c
FAILED_JOBS_SHOWN = 100


def _count(*where: ColumnElement[bool]) -> Any:
    """The number of this run's jobs matching `where` (a correlated subquery)."""
    return select(func.count()).where(J.run_id == R.id, *where).scalar_subquery()


def _final_values(now: float, status: RunStatus | None = None) -> dict[str, Any]:
    failed = _count(has_state(J.state, JobState.FAILED))
    computed = case((failed > 0, RunStatus.FAILED.value), else_=RunStatus.SUCCEEDED.value)
    return {
        "status": computed if status is None else status.value,
        "finished_at": now,
        "jobs_total": _count(),
        "jobs_succeeded": _count(has_state(J.state, JobState.SUCCEEDED)),
        "jobs_failed": failed,
        "jobs_cancelled": _count(has_state(J.state, JobState.CANCELLED)),
    }


async def complete_runs(conn: AsyncConnection, run_ids: Iterable[int | None], now: float) -> None:
    """Complete the closed runs among `run_ids` that have no queued or running job left."""
    ids = {run_id for run_id in run_ids if run_id is not None}
    if not ids:
        return
    # Lock the runs first. On PostgreSQL (READ COMMITTED) two transactions ending a run's last
    # two jobs would otherwise each see the other's job still running, and neither would
    # complete the run; locked, the second waits, and its check below sees the first's commit.
    # SQLite serialises writers anyway (and has no FOR UPDATE).
    await conn.execute(select(R.id).where(R.id.in_(ids)).order_by(R.id).with_for_update())
    idle = ~exists().where(J.run_id == R.id, has_state(J.state, *ACTIVE_STATES))
    await conn.execute(
        update(runs)
        .where(R.id.in_(ids), R.status == RunStatus.RUNNING.value, R.closed_at.is_not(None), idle)
        .values(**_final_values(now))
    )


async def _run(conn: AsyncConnection, run_id: int) -> Run | None:
    row = (await conn.execute(select(runs).where(R.id == run_id))).mappings().first()
    return None if row is None else Run.from_row(row)


class RunVerbs(Component):
    async def create_run(self, trigger: RunTrigger | str) -> int:
        values = {
            "trigger": RunTrigger(trigger).value,
            "status": RunStatus.RUNNING.value,
            "started_at": self._clock(),
        }

        async def work(conn: AsyncConnection) -> int:
            return int(
                (await conn.execute(insert(runs).values(values).returning(R.id))).scalar_one()
            )

        return await self._db.write(work, "creating a run")

    async def close_run(self, run_id: int) -> Run | None:
        """Planning is done: no more jobs join this run, which completes when they all have."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> Run | None:
            await conn.execute(
                update(runs).where(R.id == run_id, R.closed_at.is_(None)).values(closed_at=now)
            )
            await complete_runs(conn, {run_id}, now)
            return await _run(conn, run_id)

        return await self._db.write(work, "closing a run")

    async def finish_run(self, run_id: int, status: RunStatus) -> Run | None:
        """End a run now with `status` (planning failed, the user cancelled). Cancelling a run
        cancels its queued jobs; running jobs finish on their own."""
        now = self._clock()

        async def work(conn: AsyncConnection) -> Run | None:
            if status is RunStatus.CANCELLED:
                await conn.execute(
                    update(jobs)
                    .where(J.run_id == run_id, has_state(J.state, JobState.QUEUED))
                    .values(
                        state=JobState.CANCELLED.value, reason=CANCELLED_BY_USER, finished_at=now
                    )
                )
            await conn.execute(
                update(runs)
                .where(R.id == run_id, R.status == RunStatus.RUNNING.value)
                .values(closed_at=func.coalesce(R.closed_at, now), **_final_values(now, status))
            )
            return await _run(conn, run_id)

        return await self._db.write(work, "finishing a run")

    async def run(self, run_id: int) -> Run | None:
        return await self._db.read(lambda conn: _run(conn, run_id), "reading a run")

    async def runs(self, limit: int = 20) -> list[Run]:
        """The newest runs first."""
        return await self._db.read(lambda conn: recent_runs(conn, limit), "listing runs")

    async def run_summary(self, run_id: int) -> RunSummary | None:
        """A run with its live job counts by state and outcome, and its failed jobs."""
        return await self._db.read(lambda conn: _summary(conn, run_id), "summarising a run")

    async def prune_history(
        self,
        keep_days: float | None = None,
        keep_count: int | None = None,
        now: float | None = None,
    ) -> PruneResult:
        """Delete finished jobs and runs that ended more than `keep_days` ago or are beyond the
        newest `keep_count` (of each). Queued and running jobs, and open runs, are never touched."""
        now = self._clock() if now is None else now
        cutoff = None if keep_days is None else now - keep_days * 86400

        async def work(conn: AsyncConnection) -> PruneResult:
            finished_jobs = has_state(J.state, *TERMINAL_STATES)
            # A run goes only once none of its jobs is left (they are pruned first, by the same rule).
            empty_runs = (R.status != RunStatus.RUNNING.value) & ~exists().where(J.run_id == R.id)
            deleted_jobs = await _prune(conn, jobs, finished_jobs, cutoff, keep_count)
            deleted_runs = await _prune(conn, runs, empty_runs, cutoff, keep_count)
            return PruneResult(deleted_jobs, deleted_runs)

        return await self._db.write(work, "pruning history")


async def _prune(
    conn: AsyncConnection,
    table: Table,
    finished: ColumnElement[bool],
    cutoff: float | None,
    keep_count: int | None,
) -> int:
    """Delete the `finished` rows of `table` that ended before `cutoff` or are beyond the newest
    `keep_count`."""
    id_, finished_at = table.c.id, table.c.finished_at
    old: list[ColumnElement[bool]] = []
    if cutoff is not None:
        old.append(finished_at < cutoff)
    if keep_count is not None:
        newest = select(id_).where(finished).order_by(finished_at.desc(), id_.desc())
        old.append(id_.not_in(newest.limit(keep_count).scalar_subquery()))
    if not old:
        return 0
    doomed = select(id_).where(finished, or_(*old))
    result = await conn.execute(delete(table).where(id_.in_(doomed.scalar_subquery())))
    return int(result.rowcount)


async def _summary(conn: AsyncConnection, run_id: int) -> RunSummary | None:
    run = await _run(conn, run_id)
    if run is None:
        return None
    mine = J.run_id == run_id
    by_state = await conn.execute(select(J.state, func.count()).where(mine).group_by(J.state))
    by_outcome = await conn.execute(
        select(J.outcome, func.count()).where(mine, J.outcome.is_not(None)).group_by(J.outcome)
    )
    failed = await conn.execute(
        select(J.id, J.key, J.reason, J.error)
        .where(mine, has_state(J.state, JobState.FAILED))
        .order_by(J.id)
        .limit(FAILED_JOBS_SHOWN)
    )
    return RunSummary(
        run=run,
        by_state={JobState(state): count for state, count in by_state.all()},
        by_outcome=dict(by_outcome.all()),
        failed=tuple(FailedJob(*row) for row in failed.all()),
    )


async def recent_runs(conn: AsyncConnection, limit: int) -> list[Run]:
    """The newest runs first."""
    statement = select(runs).order_by(R.id.desc()).limit(limit)
    return [Run.from_row(row) for row in (await conn.execute(statement)).mappings()]
