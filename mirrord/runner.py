"""What running a job means, by kind: a copy, or the listing that plans a repository's copies."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mirrord.config.daemon import MirrorConfig
from mirrord.engine import Engine
from mirrord.model import CopyRequest
from mirrord.scheduler import copy_jobs, find_selection
from mirrord.store import Job, JobKind, TagUpdate
from mirrord.transfer import CopyResult
from mirrord.worker import JobOutcome

log = logging.getLogger(__name__)


def tag_update(request: CopyRequest, result: CopyResult) -> TagUpdate | None:
    """What to remember about the destination tag (for the immutable-tags skip)."""
    dst = request.destination
    if dst.tag is None or not result.digest:
        return None
    return TagUpdate(
        dst.registry,
        dst.repository,
        dst.tag,
        result.digest,
        str(request.source),
        request.source_name,
        copied=not result.skipped,
    )


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
        request = job.copy_request()
        result = await self.engine.copy(request)
        return JobOutcome(
            result.outcome,
            result.digest or None,
            result.bytes,
            result.bytes,
            tag_update(request, result),
        )

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
