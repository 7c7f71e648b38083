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
import contextlib
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from mirrord.config.daemon import MirrorConfig
from mirrord.errors import MirrordError, RegistryPaused
from mirrord.redact import redact_text
from mirrord.retry import BackoffPolicy, is_transient, retry_delay
from mirrord.store import Job, JobState, Store, Success, TagUpdate

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_local_workers(workers: set[str]) -> list[str]:
    """Workers of this host whose process is gone (a PID that is alive, reused or not, counts as
    alive: their jobs then wait for the lease to expire, which is always safe)."""
    dead = []
    host = socket.gethostname()
    for worker in workers:
        name, _, pid = worker.rpartition(":")
        if name != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            dead.append(worker)
        except PermissionError:
            pass  # alive, someone else's
    return dead


@dataclass(frozen=True, slots=True)
class JobOutcome:
    outcome: str  # e.g. "copied", "skipped", "listed"
    digest: str | None = None
    bytes_written: int = 0
    bytes_read: int = 0
    tag: TagUpdate | None = None  # recorded in the same transaction as the success


class JobRunner(Protocol):
    async def __call__(self, job: Job) -> JobOutcome: ...


class JobEvents:
    """What the pool reports (metrics, logs); the default does nothing."""

    def started(self, job: Job) -> None: ...

    def finished(self, job: Job, outcome: JobOutcome, duration: float) -> None: ...

    def failed(
        self, job: Job, error: BaseException, state: JobState | None, duration: float
    ) -> None: ...

    def discarded(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        """The job finished, but it had been cancelled (or taken over) meanwhile: its result
        was not recorded."""


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

    def discarded(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        for target in self.targets:
            target.discarded(job, outcome, duration)


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
        if isinstance(error, RegistryPaused) and state is JobState.QUEUED:
            level, then = logging.INFO, "deferred"  # the pause itself was logged as a warning
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

    def discarded(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        log.warning(
            "job %d %s %s: %s, but the job was cancelled or taken over meanwhile: not recorded",
            job.id,
            job.kind.value,
            job.key,
            outcome.outcome,
            extra={"job": job.id, "kind": job.kind.value, "key": job.key, "state": "discarded"},
        )


@dataclass(slots=True)
class PoolSettings:
    size: int = 8
    lease: float = 60.0
    job_timeout: float = 3600.0
    poll: float = 1.0
    cancel_poll: float = 2.0  # how soon a running job notices `mirrord cancel`
    reap_every: float = 15.0
    retry: BackoffPolicy = field(default_factory=BackoffPolicy)


def pool_settings(config: MirrorConfig) -> PoolSettings:
    retry = config.retry
    return PoolSettings(
        size=config.limits.jobs,
        job_timeout=config.limits.job_timeout.total_seconds(),
        retry=BackoffPolicy(
            base=retry.base.total_seconds(), cap=retry.max.total_seconds(), attempts=retry.attempts
        ),
    )


def _message(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "the job took longer than its timeout"
    text = str(error) if isinstance(error, MirrordError) else f"{type(error).__name__}: {error}"
    return redact_text(text)


def reason_of(error: BaseException) -> str:
    if isinstance(error, MirrordError):
        return error.reason
    return "timeout" if isinstance(error, TimeoutError) else "internal"


class Completions:
    """Records successes in batches, off the jobs' critical path.

    On SQLite every transaction costs milliseconds of thread hand-offs, and a warm sync finishes
    thousands of jobs a minute: one transaction per job would make the database the limit. A
    finished job hands its success over and frees its slot at once; the flusher commits what
    has gathered, lingering while other jobs are still running so batches are large, and at
    once when nothing else is (the end of a run is not kept waiting). A crash before the commit
    only means the job runs again (its lease expires), and a re-run of a finished copy is two
    HEADs.
    """

    LINGER = 0.25  # seconds a batch may wait for company
    BATCH = 500

    def __init__(self, store: Store, busy: Callable[[], bool] = lambda: True) -> None:
        self.store = store
        self.committed = asyncio.Event()  # set after every batch (one-shot runs wait on it)
        self._busy = busy
        self._pending: list[Success] = []
        self._reports: dict[int, Callable[[bool], None]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # a success arrived or a job ended: look again

    @property
    def pending_ids(self) -> list[int]:
        return [success.job_id for success in self._pending]

    def submit(self, success: Success, report: Callable[[bool], None] | None = None) -> None:
        """Queue a success for the next batch; `report(recorded)` is called once it is
        committed (False: the job was no longer this worker's, e.g. cancelled meanwhile)."""
        self._pending.append(success)
        if report is not None:
            self._reports[success.job_id] = report
        self._changed.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="completions")

    def job_ended(self) -> None:
        """A job left the pool: a lingering batch may have no one left to wait for."""
        self._changed.set()

    async def _linger(self) -> None:
        """Wait up to LINGER for a full batch, as long as other jobs may still add to it."""
        deadline = asyncio.get_running_loop().time() + self.LINGER
        while len(self._pending) < self.BATCH and self._busy():
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _flush(self) -> None:
        while self._pending:
            await self._linger()
            batch, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
            reports = [self._reports.pop(success.job_id, None) for success in batch]
            try:
                recorded = await self.store.queue.succeed_many(batch)
                self.committed.set()
            except Exception as exc:  # the jobs stay running; their leases expire, they re-run
                log.error("recording %d finished job(s) failed: %s", len(batch), exc)
                continue
            for success, report in zip(batch, reports, strict=True):
                if report is not None:
                    report(success.job_id in recorded)

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (for shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


class WorkerPool:
    """Runs queued jobs with at most `settings.size` at once.

    Claims come in batches and are kept in a local buffer (up to three times `size` jobs,
    their leases renewed like running ones), so a slot that frees up is refilled at once
    instead of waiting for a claim transaction, and a claim takes about `2 * size` jobs.
    """

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
        self.buffer: deque[Job] = deque()
        self.completions = Completions(store, lambda: bool(self.running or self.buffer))
        self._wake = asyncio.Event()
        self._claiming = True
        self._claim: asyncio.Task[bool] | None = None  # the claim in flight, if any

    def wake(self) -> None:
        """New work was enqueued (or a slot freed up): claim now, not at the next poll."""
        self._wake.set()

    @property
    def owned(self) -> list[int]:
        """Jobs this worker holds leases on: running, buffered, finished but not yet recorded."""
        return [*self.running, *(job.id for job in self.buffer), *self.completions.pending_ids]

    async def run(self) -> None:
        """Claim and run jobs until `stop_claiming()`; then return (running jobs continue)."""
        while self._claiming:
            self._dispatch()
            if await self._refill():
                continue
            await self._idle()

    def _dispatch(self) -> None:
        while self.buffer and len(self.running) < self.settings.size:
            self._start(self.buffer.popleft())

    async def _refill(self) -> bool:
        """Claim when the buffer runs low; True if anything was claimed."""
        size = self.settings.size
        want = 4 * size - len(self.running) - len(self.buffer)
        if len(self.buffer) >= size or want <= 0:
            return False
        # The claim is the pool's, not the claim loop's: its jobs reach the buffer even if the
        # loop is cancelled meanwhile, and a drain waits for it and hands them back.
        self._claim = asyncio.ensure_future(self._claim_into_buffer(want))
        claimed = await asyncio.shield(self._claim)
        if not self._claiming:
            return False  # a drain began during the claim: the jobs are its to hand back
        self._dispatch()
        return claimed and len(self.running) < size

    async def _claim_into_buffer(self, want: int) -> bool:
        jobs = await self.store.queue.claim(self.name, want, self.settings.lease)
        self.buffer.extend(jobs)
        return bool(jobs)

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
        if job.id in self.running:
            # Our own lease ran out (renewals late) and our own claim took the job back: the
            # attempt already running here carries on; a second one would run beside it.
            return
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = task
        task.add_done_callback(lambda _: self._finished(job.id))

    def _finished(self, job_id: int) -> None:
        self.running.pop(job_id, None)
        self.completions.job_ended()
        self._wake.set()

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
        self._record_success(job, outcome, time.monotonic() - started)

    def _record_success(self, job: Job, outcome: JobOutcome, duration: float) -> None:
        """Hand the success to the batch; logs and metrics hear of it once it is recorded."""

        def report(recorded: bool) -> None:
            if recorded:
                self.events.finished(job, outcome, duration)
            else:
                self.events.discarded(job, outcome, duration)

        success = Success(
            job.id,
            self.name,
            outcome.outcome,
            digest=outcome.digest,
            bytes_written=outcome.bytes_written,
            bytes_read=outcome.bytes_read,
            duration=duration,
            tag=outcome.tag,
        )
        self.completions.submit(success, report)

    async def _record_failure(self, job: Job, error: BaseException, duration: float) -> None:
        if not isinstance(error, MirrordError | TimeoutError):
            log.error("job %s (%s) hit an internal error", job.id, job.key, exc_info=error)
        state = await asyncio.shield(self._requeue_or_fail(job, error))
        self.completions.committed.set()
        self.events.failed(job, error, state, duration)

    def _requeue_or_fail(self, job: Job, error: BaseException) -> Awaitable[JobState | None]:
        """A registry's long pause defers the job; a transient error with attempts left
        queues it again after a backoff; anything else fails it."""
        queue, reason, message = self.store.queue, reason_of(error), _message(error)
        now = self.store.clock()  # not time.time(): other daemons compare due times with theirs
        if isinstance(error, RegistryPaused):
            due = now + (error.retry_after or 0.0)
            return queue.defer(job.id, self.name, due, reason, message)
        retry_at = None
        if is_transient(error) and job.attempts < job.max_attempts:
            retry_at = now + retry_delay(error, job.attempts, self.settings.retry)
        return queue.fail(job.id, self.name, reason, message, retry_at)

    def stop_claiming(self) -> None:
        self._claiming = False
        self._wake.set()

    async def drain(self, grace: float) -> int:
        """Hand buffered jobs back, wait up to `grace` seconds for running ones, then requeue
        the rest. Returns how many were handed back."""
        self.stop_claiming()
        if (claim := self._claim) is not None:
            await asyncio.wait([claim])  # its jobs join the buffer, handed back below
            if not claim.cancelled():
                claim.exception()  # a failed claim is the claim loop's to report
        buffered = [job.id for job in self.buffer]
        self.buffer.clear()
        await self._hand_back(buffered)
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=grace)
        leftover = dict(self.running)
        for task in leftover.values():
            task.cancel()
        await asyncio.gather(*leftover.values(), return_exceptions=True)
        await self.completions.flush()
        await self._hand_back(list(leftover))
        return len(leftover) + len(buffered)

    async def _hand_back(self, job_ids: list[int]) -> None:
        """Requeue jobs this worker will not run; if the database refuses, the drain goes on
        (the jobs come back when their leases expire, or at once when mirrord starts again on
        this host)."""
        if not job_ids:
            return
        try:
            await self.store.queue.requeue(self.name, job_ids)
        except MirrordError as exc:
            log.error("handing %d job(s) back to the queue failed: %s", len(job_ids), exc)

    async def heartbeat(self) -> None:
        """Renew the leases of running and buffered jobs, forever (a background task)."""
        while True:
            await asyncio.sleep(self.settings.lease / 3)
            held = self.owned
            if not held:
                continue
            kept = await self.store.queue.heartbeat(self.name, held, self.settings.lease)
            for job_id in set(held) - kept:
                # Cancelled by an operator, or the lease was lost: stop working on it.
                if job_id in self.running:
                    self.running[job_id].cancel()
                self.buffer = deque(job for job in self.buffer if job.id != job_id)

    async def watch_cancels(self) -> None:
        """Stop running jobs an operator cancelled, within `cancel_poll` seconds (one small
        read; the heartbeat, a write every lease/3, would take up to 20 s), forever."""
        while True:
            await asyncio.sleep(self.settings.cancel_poll)
            running = list(self.running)
            if not running:
                continue
            try:
                cancelled = await self.store.queue.cancelled_among(running)
            except MirrordError as exc:  # the heartbeat will notice instead
                log.debug("looking for cancelled jobs failed: %s", exc)
                continue
            for job_id in cancelled:
                if (task := self.running.get(job_id)) is not None:
                    log.info("job %d: cancelled while running; stopping it", job_id)
                    task.cancel()

    async def reaper(self) -> None:
        """Requeue the jobs of a dead predecessor on this host at once, then, forever, jobs
        whose leases expired (a crashed worker's elsewhere), measuring the database server's
        clock again before each round (leases are compared on its time)."""
        dead = dead_local_workers(await self.store.queue.running_workers())
        if dead:
            result = await self.store.queue.reap_workers(dead)
            log.warning("took back the jobs of %s (process gone): %r", ", ".join(dead), result)
        while True:
            result = await self.store.queue.reap()
            if result:
                log.warning("jobs whose worker stopped renewing its lease: %r", result)
            await asyncio.sleep(self.settings.reap_every)
            await self.store.sync_clock()
