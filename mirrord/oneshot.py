"""One-shot sync (`mirrord sync --once`, skopeo-style `mirrord sync`): one run, then exit.

The same store, engine and worker pool as the daemon: plan the configuration into one run,
run every job of it to completion (retries included), and return the run's summary.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from mirrord.config.daemon import MirrorConfig
from mirrord.engine import Engine, engine_limits
from mirrord.registry.events import Observer
from mirrord.runner import JobRunner
from mirrord.scheduler import enqueue_run
from mirrord.store import Job, JobState, RunStatus, RunSummary, RunTrigger, Store
from mirrord.tasks import to_completion
from mirrord.transports.docker import OptionsFor
from mirrord.worker import FanOut, JobEvents, JobLog, WorkerPool, pool_settings

POLL = 1.0  # seconds between looks at the run when no job has finished meanwhile


@dataclass(frozen=True, slots=True)
class OneShotResult:
    summary: RunSummary
    jobs: tuple[Job, ...]  # every job of the run, for reports

    @property
    def ok(self) -> bool:
        """Every key the run planned ended in a success (exit 0 promises that)."""
        return self.summary.run.status is RunStatus.SUCCEEDED and not self.cancelled

    @property
    def cancelled(self) -> tuple[Job, ...]:
        """Jobs cancelled (by an operator, or superseded by a job of another run) whose key no
        job of this run copied: the run did not do that work. A job superseded by a sibling
        of the same run is not among them; the sibling's result counts."""
        done = {job.key for job in self.jobs if job.state is JobState.SUCCEEDED}
        return tuple(
            job for job in self.jobs if job.state is JobState.CANCELLED and job.key not in done
        )


class Background:
    """Tasks that run beside the one-shot's wait and must not end before it: the claim loop,
    the lease heartbeat, the reaper. One of them failing (the database gone, say) ends the wait
    with its error instead of leaving `sync` waiting forever for a run nobody works on."""

    def __init__(self, tasks: list[asyncio.Task[None]]) -> None:
        self.tasks = tasks

    async def until(self, main: Coroutine[Any, Any, None]) -> None:
        """Run `main` to its end, unless a background task fails first (then raise that)."""
        waiting = asyncio.create_task(main)
        pending: set[asyncio.Task[None]] = {waiting, *self.tasks}
        try:
            while waiting in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {waiting}:
                    if not task.cancelled() and (error := task.exception()) is not None:
                        raise error
            waiting.result()
        finally:
            waiting.cancel()


@contextlib.asynccontextmanager
async def background(*coros: Coroutine[Any, Any, None]) -> AsyncIterator[Background]:
    """Run `coros` as tasks for the duration of the block, then cancel them."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        yield Background(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def sync_once(
    config: MirrorConfig,
    store: Store,
    options_for: OptionsFor,
    observer: Observer | None = None,
    events: tuple[JobEvents, ...] = (),
) -> OneShotResult:
    """Plan `config` into one run and run it to the end."""
    engine = Engine(store, options_for, engine_limits(config), observer or Observer())
    pool: WorkerPool | None = None
    try:
        pool = WorkerPool(
            store,
            JobRunner(engine, lambda: config, lambda: pool.wake() if pool else None),
            pool_settings(config),
            FanOut(JobLog(), *events),
        )
        run_id = await enqueue_run(store, config, RunTrigger.ONCE)
        async with background(
            pool.run(), pool.heartbeat(), pool.watch_cancels(), pool.reaper()
        ) as beside:
            try:
                await beside.until(_wait_for_run(store, run_id, pool.completions.committed))
            finally:
                # Interrupted too (Ctrl-C, --command-timeout, a background task's error): jobs
                # still running go back to the queue, successes waiting in the batch are kept.
                await to_completion(pool.drain(0))
    finally:
        await engine.close()
    summary = await store.queue.run_summary(run_id)
    assert summary is not None
    jobs = await store.queue.jobs(run_id=run_id, limit=1_000_000)
    # A nightly sync keeps its database from night to night: history is bounded as the daemon
    # bounds it (`history:`), after this run's jobs were read for the report.
    await store.queue.prune_history(config.history.keep_days, config.history.keep_jobs)
    return OneShotResult(summary, tuple(reversed(jobs)))


async def _wait_for_run(store: Store, run_id: int, progress: asyncio.Event) -> None:
    """Until the run is over: look again whenever a job's end was recorded (or every POLL)."""
    while True:
        progress.clear()
        run = await store.queue.run(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), POLL)
