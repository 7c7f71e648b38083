"""Tasks cancelled or failing at awkward moments: a shutdown during a tick, a claim in flight
when a one-shot drains, a store write failing during a shutdown.

A store write whose caller is cancelled still commits (mirrord.tasks.to_completion); whatever
the caller meant to do with its result (close the run it created, run or hand back the jobs
it claimed) must not be skipped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord import scheduler
from mirrord.config.daemon import MirrorConfig
from mirrord.store import JobState, RunTrigger, Store
from tests.store.support import copy_jobs


def slow_writes(store: Store, action: str, started: asyncio.Event, delay: float = 0.05) -> None:
    """Writes named `action` take `delay` seconds inside their transaction (a busy disk, a
    busy PostgreSQL); `started` is set once one is inside."""
    db = store.db
    write = db.write

    async def slowed(work: Callable[[AsyncConnection], Awaitable[Any]], what: str) -> Any:
        if what != action:
            return await write(work, what)

        async def slow(conn: AsyncConnection) -> Any:
            result = await work(conn)
            started.set()
            await asyncio.sleep(delay)
            return result

        return await write(slow, what)

    db.write = slowed  # type: ignore[method-assign,assignment]


async def cancel_a_tick_during(store: Store, action: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tick planning one copy job, cancelled (Daemon._shutdown cancels the scheduler) while
    its write named `action` is under way."""
    monkeypatch.setattr(scheduler, "initial_jobs", lambda config: ([], copy_jobs(1)))
    inside = asyncio.Event()
    slow_writes(store, action, inside)
    tick = asyncio.create_task(
        scheduler.enqueue_run(store, cast(MirrorConfig, None), RunTrigger.SCHEDULE)
    )
    await asyncio.wait_for(inside.wait(), 10)
    tick.cancel()
    with pytest.raises(asyncio.CancelledError):
        await tick


async def test_a_run_cancelled_while_it_is_being_created_is_planned_and_closed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the scheduler's tick creates its run (the daemon's first tick runs right
    after start): the run used to stay open and `running` forever, never pruned."""
    await cancel_a_tick_during(store, "creating a run", monkeypatch)
    (run,) = await store.queue.runs()
    assert run.closed_at is not None  # planned to the end: it completes when its jobs do
    (job,) = await store.queue.jobs(limit=10)
    assert (job.state, job.run_id) == (JobState.QUEUED, run.id)


async def _never_runs(job: Any) -> Any:
    await asyncio.Event().wait()


async def test_jobs_claimed_while_a_one_shot_drains_are_not_left_running(store: Store) -> None:
    """`sync_once` ends with `await pool.drain(0)` and then `background()` cancels `pool.run()`.
    The claim loop claims again each time a job ends, i.e. exactly when the run ends, so a
    claim is often in flight at that moment. drain(0) does not wait for it: the claim commits
    (since `_to_completion`, even though `pool.run()` is then cancelled), and its jobs are
    left `running` under a worker that is gone (or, if the claim returns first, started after
    the drain looked, by nobody stopped). With a shared database (a daemon, a second sync on
    the same state DB) those jobs wait for their lease to expire and lose an attempt."""
    from mirrord.oneshot import background
    from mirrord.worker import PoolSettings, WorkerPool

    await store.queue.enqueue(copy_jobs(2))  # queued work the next claim finds
    inside = asyncio.Event()
    slow_writes(store, "claiming jobs", inside)
    pool = WorkerPool(store, _never_runs, PoolSettings(size=2), name="host:4242")
    async with background(pool.run(), pool.heartbeat(), pool.watch_cancels()):
        await asyncio.wait_for(inside.wait(), 10)  # the run's last job ended; a claim runs
        await pool.drain(0)  # oneshot.sync_once, after beside.until(...)
    await asyncio.sleep(0.2)  # anything still in flight lands
    states = [(job.state, job.worker) for job in await store.queue.jobs(limit=10)]
    orphans = [task for task in pool.running.values() if not task.done()]
    for task in orphans:
        task.cancel()
    assert not orphans, f"{len(orphans)} job task(s) still running after drain and background"
    assert all(state is JobState.QUEUED for state, _ in states), states


async def test_a_shutdown_during_planning_does_not_cancel_work_an_earlier_run_queued(
    store: Store, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick adopts keys an earlier run still has queued (a retry waiting out its backoff).
    SIGTERM while that tick plans: enqueue_run's handler ends its run with
    finish_run(CANCELLED), which cancels every queued job of the run, the adopted ones too, as
    'cancelled' (by the user). The earlier run then completes without them and, with a cron
    schedule, nothing re-plans them before the next tick. Planning now runs to its end."""
    q = store.queue
    earlier = await q.create_run(RunTrigger.SCHEDULE)
    await q.enqueue(copy_jobs(1), earlier, due_at=clock.now + 600)  # a retry, due later
    await q.close_run(earlier)
    await cancel_a_tick_during(store, "closing a run", monkeypatch)
    (job,) = await q.jobs(limit=10)
    assert job.state is JobState.QUEUED, (job.state, job.reason, await q.runs())


async def test_engine_close_leaves_no_blob_index_load_running(store: Store) -> None:
    """A job cancelled by the drain while its blob lookup loads (every job starts its blobs at
    once) leaves the loader task running: Engine.close() flushes the writer but neither waits
    for nor cancels the loader, so it reads on after the daemon/sync disposed the store
    (a connection opened on the disposed engine and never closed: ResourceWarning 'unclosed
    connection' on PostgreSQL, 'deleted before being closed' on SQLite)."""
    from mirrord.engine import Engine

    read = store.db.read
    inside = asyncio.Event()

    async def slowed(work: Callable[[AsyncConnection], Awaitable[Any]], what: str) -> Any:
        if what != "finding blob locations":
            return await read(work, what)

        async def slow(conn: AsyncConnection) -> Any:
            inside.set()
            await asyncio.sleep(0.3)
            return await work(conn)

        return await read(slow, what)

    store.db.read = slowed  # type: ignore[method-assign,assignment]
    engine = Engine(store, lambda host, role: cast(Any, None))
    job = asyncio.create_task(
        engine.index.known_in_repo("dst.example", "a/b", "sha256:" + "0" * 64)
    )
    await asyncio.wait_for(inside.wait(), 10)
    job.cancel()  # WorkerPool.drain: the grace ran out
    await asyncio.gather(job, return_exceptions=True)
    await engine.close()
    loader = engine.index._loader
    assert loader is not None
    still_running = not loader.done()
    await asyncio.gather(loader, return_exceptions=True)  # (let it end before the fixture closes)
    assert not still_running, "the blob-index loader outlived Engine.close()"


async def test_a_failing_step_does_not_abandon_the_rest_of_the_shutdown(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses the hand-back ('database is locked', PostgreSQL restarting: maybe
    the very failure that stopped the daemon) and closing the HTTP server fails: the drain
    still stops the running jobs, the background tasks are still cancelled, the registry
    connections still closed; each failure is logged by name and the first one is raised."""
    from mirrord.daemon import Daemon
    from mirrord.errors import StoreError
    from mirrord.metrics import Metrics
    from mirrord.worker import PoolSettings, WorkerPool

    await store.queue.enqueue(copy_jobs(3))
    claimed = await store.queue.claim("host:4242", 3)
    pool = WorkerPool(store, _never_runs, PoolSettings(size=2), name="host:4242")
    pool.buffer.append(claimed[2])
    pool._start(claimed[0])
    pool._start(claimed[1])

    async def locked(worker: str, job_ids: Any) -> Any:
        raise StoreError("database error while requeueing jobs: database is locked")

    monkeypatch.setattr(store.queue, "requeue", locked)
    daemon = Daemon.__new__(Daemon)
    daemon.drain_seconds = 0.1
    daemon.metrics = Metrics()
    daemon.scheduler = cast(Any, type("S", (), {"running": True})())

    async def forever() -> None:
        await asyncio.Event().wait()

    daemon._tasks = [
        asyncio.create_task(forever(), name=name)
        for name in ("scheduler", "workers", "heartbeat", "reaper", "metrics")
    ]
    closed: list[str] = []

    class Closer:
        async def close(self) -> None:
            closed.append("engine")

        async def cleanup(self) -> None:
            raise RuntimeError("the HTTP server would not close")

    try:
        with pytest.raises(RuntimeError, match="would not close"):
            await daemon._shutdown(pool, cast(Any, Closer()), cast(Any, Closer()))
        left = [t.get_name() for t in daemon._tasks if not t.done()]
        jobs_left = [t.get_name() for t in pool.running.values() if not t.done()]
        assert (left, jobs_left, closed) == ([], [], ["engine"])
        assert "handing 1 job(s) back to the queue failed: database error" in caplog.text
        assert "handing 2 job(s) back to the queue failed: database error" in caplog.text
        assert "stopping: closing the HTTP server failed: the HTTP server would not" in caplog.text
    finally:
        for task in [*daemon._tasks, *pool.running.values()]:
            task.cancel()
        await asyncio.gather(*daemon._tasks, *pool.running.values(), return_exceptions=True)
