"""Scheduling: each tick plans the configuration into jobs and enqueues them as one run.

Selections that name their tags become copy jobs at once. Selections that need the registry's
tag list (all tags, regex, semver) become one `list` job each, run by the workers like any other
job: listing is retried on failure and a repository whose listing fails is a failed job, visible
in status and metrics (skopeo would log it and exit 0). A list job enqueues its copies into the
same run. A tick that finds a key already queued does nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime

from mirrord.config.daemon import MirrorConfig, ScheduleSpec
from mirrord.errors import ConfigError
from mirrord.model import CopyRequest
from mirrord.plan import RepoSelection, copies_for, merge
from mirrord.store import Job, NewJob, RunStatus, RunTrigger, Store
from mirrord.tasks import to_completion

log = logging.getLogger(__name__)

LIST_PRIORITY = 50
MANUAL_PRIORITY = 100


def list_key(selection: RepoSelection) -> str:
    return f"list:{selection.key}"


def find_selection(config: MirrorConfig, job: Job) -> RepoSelection:
    key = str(job.payload.get("selection", ""))
    for selection in config.selections:
        if selection.key == key:
            return selection
    raise ConfigError(f"{key}: no longer in the configuration")


def copy_jobs(requests: tuple[CopyRequest, ...], attempts: int) -> list[NewJob]:
    return [NewJob.copy(request, attempts) for request in requests]


def initial_jobs(config: MirrorConfig) -> tuple[list[NewJob], list[NewJob]]:
    """(list jobs, copy jobs) for one run of `config`."""
    attempts = config.retry.attempts
    listing = [
        NewJob.listing(list_key(s), {"selection": s.key}, s.source_name, attempts)
        for s in config.selections
        if s.needs_listing
    ]
    direct, _ = merge(r for s in config.selections for r in copies_for(s))
    return listing, copy_jobs(direct, attempts)


async def enqueue_run(
    store: Store, config: MirrorConfig, trigger: RunTrigger, priority: int = 0
) -> int:
    """Create a run, enqueue its jobs, and close it to further planning.

    Planning (a few writes) runs to its end even if the caller is cancelled, a shutdown during
    a tick say: stopped half-way, it would leave a run open with part of its jobs."""
    return await to_completion(_plan_run(store, config, trigger, priority))


async def _plan_run(store: Store, config: MirrorConfig, trigger: RunTrigger, priority: int) -> int:
    run_id = await store.queue.create_run(trigger)
    try:
        listing, copies = initial_jobs(config)
        listed = await store.queue.enqueue(listing, run_id, priority=max(priority, LIST_PRIORITY))
        direct = await store.queue.enqueue(copies, run_id, priority=priority)
        await store.queue.close_run(run_id)
    except BaseException:
        # A run left open would show as running forever and never be pruned: end it now (if
        # the database lets us; the error that stopped planning is the one that matters). Its
        # queued jobs stay queued: some may be an earlier run's, adopted by this one.
        with contextlib.suppress(Exception):
            await store.queue.finish_run(run_id, RunStatus.FAILED)
        raise
    log.info(
        "run %d (%s): %d listing job(s), %d copy job(s) enqueued, %d already queued",
        run_id,
        trigger.value,
        listed.enqueued,
        direct.enqueued,
        listed.duplicates + direct.duplicates,
    )
    return run_id


def next_tick(schedule: ScheduleSpec, last: float | None, now: float) -> float:
    """When the next tick is due: interval ticks start at once, cron ticks at the next match."""
    if schedule.interval is not None:
        return now if last is None else last + schedule.interval.total_seconds()
    assert schedule.cron is not None
    from croniter import croniter  # loaded only for cron schedules
    from dateutil.tz import tzlocal

    # The local zone with its rules (tzlocal), not today's fixed offset (astimezone()): a
    # `0 9 * * *` stays at 09:00 across a daylight-saving change.
    start = datetime.fromtimestamp(now, tzlocal())
    return float(croniter(schedule.cron, start).get_next(float))


class Scheduler:
    """Ticks on the configured schedule; without one it plans a single run at start."""

    def __init__(
        self, store: Store, config: Callable[[], MirrorConfig], on_enqueue: Callable[[], None]
    ) -> None:
        self.store = store
        self.config = config
        self.on_enqueue = on_enqueue
        self.last_tick: float | None = None
        self.running = False
        self._reschedule = asyncio.Event()

    def reschedule(self) -> None:
        """The configuration changed: recompute when the next tick is due."""
        self._reschedule.set()

    async def tick(self, trigger: RunTrigger = RunTrigger.SCHEDULE) -> int:
        self.last_tick = time.time()
        run_id = await enqueue_run(self.store, self.config(), trigger)
        self.on_enqueue()
        return run_id

    async def run(self) -> None:
        self.running = True
        schedule = self.config().schedule
        if schedule is None:
            await self.tick()
        while True:
            schedule = self.config().schedule
            if schedule is None:
                await self._wait(None)
                continue
            due = next_tick(schedule, self.last_tick, time.time())
            if await self._wait(due - time.time()):
                await self.tick()

    async def _wait(self, seconds: float | None) -> bool:
        """Sleep until due (True) or until rescheduled (False)."""
        self._reschedule.clear()
        try:
            await asyncio.wait_for(
                self._reschedule.wait(), timeout=max(0.0, seconds) if seconds is not None else None
            )
        except TimeoutError:
            return True
        return False
