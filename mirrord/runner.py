"""What running a job means, by kind: a copy, or the listing that plans a repository's copies."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mirrord.config.daemon import MirrorConfig
from mirrord.engine import Engine
from mirrord.scheduler import copy_jobs, find_selection
from mirrord.store import Job, JobKind
from mirrord.worker import JobOutcome

log = logging.getLogger(__name__)


class JobRunner:
    """Dispatches claimed jobs to the engine, reading the current configuration each time."""

    def __init__(
        self, engine: Engine, config: Callable[[], MirrorConfig], on_enqueue: Callable[[], None]
    ) -> None:
        self.engine = engine
        self.config = config
        self.on_enqueue = on_enqueue

    async def __call__(self, job: Job) -> JobOutcome:
        if job.kind is JobKind.LIST:
            return await self._list(job)
        result = await self.engine.copy(job.copy_request())
        return JobOutcome(result.outcome, result.digest or None, result.bytes, result.bytes)

    async def _list(self, job: Job) -> JobOutcome:
        config = self.config()
        selection = find_selection(config, job)
        requests = await self.engine.list_and_plan(selection)
        queue = self.engine.store.queue
        enqueued = await queue.enqueue(copy_jobs(requests, config.retry.attempts), job.run_id)
        log.info(
            "%s: %d tag(s) selected, %d job(s) enqueued",
            selection.source.name,
            len(requests),
            enqueued.enqueued,
        )
        self.on_enqueue()
        return JobOutcome("listed")
