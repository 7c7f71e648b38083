"""The worker pool: claim jobs, run them under a timeout, keep their leases, drain on stop.

Claims are batched (as many jobs as there are free slots, in one statement). One heartbeat
renews the leases of all of this worker's running jobs. A job's failure is classified: transient
errors go back to the queue with capped, jittered exponential backoff until the job's attempts
are spent; permanent ones fail at once. One failing job never stops the others.

Draining (SIGTERM): stop claiming, let running jobs finish up to a grace period, then cancel the
rest and hand them back to the queue, the interrupted attempt not counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Protocol

from mirrord.errors import MirrordError
from mirrord.redact import redact_text
from mirrord.retry import BackoffPolicy, is_transient, retry_delay
from mirrord.store import Job, JobState, Store

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class JobOutcome:
    outcome: str  # e.g. "copied", "skipped", "listed"
    digest: str | None = None
    bytes_written: int = 0
    bytes_read: int = 0


class JobRunner(Protocol):
    async def __call__(self, job: Job) -> JobOutcome: ...


class JobEvents:
    """What the pool reports (metrics, logs); the default does nothing."""

    def started(self, job: Job) -> None: ...

    def finished(self, job: Job, outcome: JobOutcome, duration: float) -> None: ...

    def failed(
        self, job: Job, error: BaseException, state: JobState | None, duration: float
    ) -> None: ...


class FanOut(JobEvents):
    """Sends every event to several listeners (metrics, logs, a progress display)."""

    def __init__(self, *targets: JobEvents) -> None:
        self.targets = targets

    def started(self, job: Job) -> None:
        for target in self.targets:
            target.started(job)

    def finished(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        for target in self.targets:
            target.finished(job, outcome, duration)

    def failed(
        self, job: Job, error: BaseException, state: JobState | None, duration: float
    ) -> None:
        for target in self.targets:
            target.failed(job, error, state, duration)


class JobLog(JobEvents):
    """One log line per job outcome, with its key facts as structured fields."""

    def finished(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        log.info(
            "job %d %s %s: %s",
            job.id,
            job.kind.value,
            job.key,
            outcome.outcome,
            extra={
                "job": job.id,
                "kind": job.kind.value,
                "key": job.key,
                "outcome": outcome.outcome,
                "digest": outcome.digest,
                "bytes": outcome.bytes_written,
                "duration": round(duration, 3),
                "attempt": job.attempts,
                "source": job.source_name,
            },
        )

    def failed(
        self, job: Job, error: BaseException, state: JobState | None, duration: float
    ) -> None:
        level = logging.WARNING if state is JobState.QUEUED else logging.ERROR
        then = "will retry" if state is JobState.QUEUED else (state.value if state else "lost")
        log.log(
            level,
            "job %d %s %s: %s (%s)",
            job.id,
            job.kind.value,
            job.key,
            _message(error),
            then,
            extra={
                "job": job.id,
                "kind": job.kind.value,
                "key": job.key,
                "reason": reason_of(error),
                "state": then,
                "duration": round(duration, 3),
                "attempt": job.attempts,
                "source": job.source_name,
            },
        )


@dataclass(slots=True)
class PoolSettings:
    size: int = 8
    lease: float = 60.0
    job_timeout: float = 3600.0
    poll: float = 1.0
    reap_every: float = 15.0
    retry: BackoffPolicy = field(default_factory=BackoffPolicy)


def _message(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "the job took longer than its timeout"
    text = str(error) if isinstance(error, MirrordError) else f"{type(error).__name__}: {error}"
    return redact_text(text)


def reason_of(error: BaseException) -> str:
    if isinstance(error, MirrordError):
        return error.reason
    return "timeout" if isinstance(error, TimeoutError) else "internal"


class WorkerPool:
    """Runs queued jobs with at most `settings.size` at once."""

    def __init__(
        self,
        store: Store,
        runner: JobRunner,
        settings: PoolSettings,
        events: JobEvents | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.settings = settings
        self.events = events or JobEvents()
        self.name = name or worker_id()
        self.running: dict[int, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._claiming = True

    def wake(self) -> None:
        """New work was enqueued: claim now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and run jobs until `stop_claiming()`; then return (running jobs continue)."""
        while self._claiming:
            free = self.settings.size - len(self.running)
            jobs = (
                await self.store.queue.claim(self.name, free, self.settings.lease) if free else []
            )
            for job in jobs:
                self._start(job)
            if not jobs or len(self.running) >= self.settings.size:
                await self._idle()

    async def _idle(self) -> None:
        """Wait for a wake-up, a finished job or the poll interval, whichever comes first."""
        self._wake.clear()
        wake = asyncio.create_task(self._wake.wait())
        try:
            await asyncio.wait(
                [wake, *self.running.values()],
                timeout=self.settings.poll,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wake.cancel()

    def _start(self, job: Job) -> None:
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = task
        task.add_done_callback(lambda _: self.running.pop(job.id, None))

    async def _execute(self, job: Job) -> None:
        started = time.monotonic()
        self.events.started(job)
        try:
            async with asyncio.timeout(self.settings.job_timeout):
                outcome = await self.runner(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._record_failure(job, exc, time.monotonic() - started)
            return
        duration = time.monotonic() - started
        await asyncio.shield(self._record_success(job, outcome, duration))
        self.events.finished(job, outcome, duration)

    async def _record_success(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        await self.store.queue.succeed(
            job.id,
            self.name,
            outcome.outcome,
            digest=outcome.digest,
            bytes_written=outcome.bytes_written,
            bytes_read=outcome.bytes_read,
            duration=duration,
        )

    async def _record_failure(self, job: Job, error: BaseException, duration: float) -> None:
        retry_at = None
        if is_transient(error) and job.attempts < job.max_attempts:
            retry_at = time.time() + retry_delay(error, job.attempts, self.settings.retry)
        if not isinstance(error, MirrordError | TimeoutError):
            log.error("job %s (%s) hit an internal error", job.id, job.key, exc_info=error)
        state = await asyncio.shield(
            self.store.queue.fail(job.id, self.name, reason_of(error), _message(error), retry_at)
        )
        self.events.failed(job, error, state, duration)

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()

    async def drain(self, grace: float) -> int:
        """Wait up to `grace` seconds for running jobs, then requeue the rest. Returns how many
        were handed back."""
        self.stop_claiming()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=grace)
        leftover = dict(self.running)
        for task in leftover.values():
            task.cancel()
        await asyncio.gather(*leftover.values(), return_exceptions=True)
        if leftover:
            await self.store.queue.requeue(self.name, list(leftover))
        return len(leftover)

    async def heartbeat(self) -> None:
        """Renew the leases of running jobs, forever (run it as a background task)."""
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            if self.running:
                owned = await self.store.queue.heartbeat(
                    self.name, list(self.running), self.settings.lease
                )
                for job_id in set(self.running) - owned:
                    # Cancelled by an operator, or the lease was lost: stop working on it.
                    self.running[job_id].cancel()

    async def reaper(self) -> None:
        """Requeue jobs whose leases expired (a crashed worker's), forever."""
        while True:
            result = await self.store.queue.reap()
            if result:
                log.warning("jobs whose worker stopped renewing its lease: %r", result)
            await asyncio.sleep(self.settings.reap_every)
