"""Prometheus metrics: mirrord's own registry, `mirrord_` names, units in names, bounded labels.

Labels are registry hosts, method classes, outcomes, reasons and source names: never URLs,
userinfo, tags or digests. Gauges that come from the database (jobs by state, queue age, per
source status) are refreshed by a background task, so a scrape never waits on SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    write_to_textfile,
)

from mirrord import __version__
from mirrord.registry.events import Observer
from mirrord.store import Job as StoredJob
from mirrord.store import JobKind, JobState, Store
from mirrord.worker import JobEvents, JobOutcome, reason_of

log = logging.getLogger(__name__)

disable_created_metrics()  # type: ignore[no-untyped-call]  # the `_created` series only add noise to every counter

DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
TLS_MODES = ("verify", "insecure", "plain-http")
RUN_STATUSES = ("running", "succeeded", "failed", "cancelled")
# What became of a job that raised: retried later, failed for good, cancelled by an operator.
FAILED_OUTCOMES: dict[JobState | None, str] = {
    JobState.QUEUED: "retried",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "cancelled",
}


class Metrics(Observer, JobEvents):
    """Every metric mirrord exports, and the hooks that move them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.build_info = Gauge(
            "mirrord_build_info", "Version of mirrord.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.jobs = Gauge("mirrord_jobs", "Jobs by state.", ["state"], registry=r)
        self.jobs_finished = Counter(
            "mirrord_jobs_finished_total",
            "Jobs finished, by kind (copy, list), outcome (copied, skipped, listed, retried, "
            "failed, cancelled, lost) and reason (empty on success).",
            ["kind", "outcome", "reason"],
            registry=r,
        )
        self.job_duration = Histogram(
            "mirrord_job_duration_seconds",
            "Time to run one job.",
            ["kind"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.tags = Counter(
            "mirrord_tags_total",
            "Tags processed: copied or skipped (unchanged).",
            ["result"],
            registry=r,
        )
        self.blobs = Counter(
            "mirrord_blobs_total",
            "Blob decisions: skipped_known, skipped_head, mounted, uploaded, skipped_foreign, failed.",
            ["outcome"],
            registry=r,
        )
        self.bytes_read = Counter(
            "mirrord_source_read_bytes_total",
            "Blob bytes read from source registries.",
            ["registry"],
            registry=r,
        )
        self.bytes_written = Counter(
            "mirrord_destination_written_bytes_total",
            "Blob bytes written to destinations.",
            ["registry"],
            registry=r,
        )
        self.requests = Counter(
            "mirrord_registry_requests_total",
            "HTTP requests to registries.",
            ["registry", "method", "status"],
            registry=r,
        )
        self.rate_limits = Counter(
            "mirrord_registry_rate_limited_total",
            "429 answers from registries.",
            ["registry"],
            registry=r,
        )
        self.backoff = Gauge(
            "mirrord_registry_backoff_seconds",
            "Retry-After pause currently imposed on requests to a registry.",
            ["registry"],
            registry=r,
        )
        self.ratelimit_gauge = Gauge(
            "mirrord_registry_ratelimit_remaining",
            "Last ratelimit-remaining header seen (Docker Hub pull quota).",
            ["registry"],
            registry=r,
        )
        self.digest_mismatches = Counter(
            "mirrord_digest_mismatches_total",
            "Blobs or manifests that did not match their digest or size, by the registry that "
            "served them (each detection, including those a re-fetch healed).",
            ["registry"],
            registry=r,
        )
        self.tls = Gauge(
            "mirrord_registry_tls_mode",
            "1 for how a registry is reached: verify, insecure (no certificate check) or "
            "plain-http.",
            ["registry", "mode"],
            registry=r,
        )
        self.queue_depth = Gauge("mirrord_queue_depth", "Jobs waiting in the queue.", registry=r)
        self.queue_oldest = Gauge(
            "mirrord_queue_oldest_age_seconds",
            "Age of the oldest queued job (0 if none).",
            registry=r,
        )
        self.in_flight = Gauge(
            "mirrord_transfers_in_flight", "Blob streams moving bytes right now.", registry=r
        )
        self.source_last_success = Gauge(
            "mirrord_source_last_success_timestamp_seconds",
            "When the last run that fully succeeded for a source ended (unix time).",
            ["source"],
            registry=r,
        )
        self.source_last_status = Gauge(
            "mirrord_source_last_run_status",
            "1 for the status of a source's latest run (running, succeeded, failed, cancelled).",
            ["source", "status"],
            registry=r,
        )
        self.source_pending = Gauge(
            "mirrord_source_pending_jobs",
            "Queued and running jobs of a source.",
            ["source"],
            registry=r,
        )
        self.scheduler_up = Gauge(
            "mirrord_scheduler_running", "1 while the scheduler task runs.", registry=r
        )
        self._backoff_until: dict[str, float] = {}
        self._dirty = asyncio.Event()

    def render(self) -> bytes:
        self._refresh_backoff()
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """Write every metric for node_exporter's textfile collector (atomically: a temporary
        file renamed into place, so the collector never reads half a file)."""
        self._refresh_backoff()
        write_to_textfile(str(path), self.registry)

    # -- registry observer ---------------------------------------------------------------------

    def request(self, registry: str, method_class: str, status: int) -> None:
        self.requests.labels(registry, method_class, str(status)).inc()

    def transferred(self, registry: str, direction: str, nbytes: int) -> None:
        counter = self.bytes_read if direction == "read" else self.bytes_written
        counter.labels(registry).inc(nbytes)

    def rate_limited(self, registry: str, retry_after: float | None) -> None:
        self.rate_limits.labels(registry).inc()
        if retry_after:
            self._backoff_until[registry] = max(
                self._backoff_until.get(registry, 0.0), time.monotonic() + retry_after
            )

    def ratelimit_remaining(self, registry: str, remaining: int) -> None:
        self.ratelimit_gauge.labels(registry).set(remaining)

    def blob_placed(self, outcome: str) -> None:
        self.blobs.labels(outcome).inc()

    def transfers_changed(self, delta: int) -> None:
        self.in_flight.inc(delta)

    def digest_mismatch(self, registry: str) -> None:
        self.digest_mismatches.labels(registry).inc()

    def tls_mode(self, registry: str, mode: str) -> None:
        for known in TLS_MODES:
            self.tls.labels(registry, known).set(1 if known == mode else 0)

    def _refresh_backoff(self) -> None:
        now = time.monotonic()
        # Rendering runs in a thread while the event loop may add registries: iterate a copy.
        for registry, until in list(self._backoff_until.items()):
            self.backoff.labels(registry).set(max(0.0, until - now))

    # -- job events ----------------------------------------------------------------------------

    def started(self, job: StoredJob) -> None:
        self._dirty.set()

    def finished(self, job: StoredJob, outcome: JobOutcome, duration: float) -> None:
        self.jobs_finished.labels(job.kind.value, outcome.outcome, "").inc()
        self.job_duration.labels(job.kind.value).observe(duration)
        if job.kind is JobKind.COPY:
            self.tags.labels(outcome.outcome).inc()
        self._dirty.set()

    def failed(
        self, job: StoredJob, error: BaseException, state: JobState | None, duration: float
    ) -> None:
        outcome = FAILED_OUTCOMES.get(state, "lost")
        self.jobs_finished.labels(job.kind.value, outcome, reason_of(error)).inc()
        self.job_duration.labels(job.kind.value).observe(duration)
        self._dirty.set()

    # -- gauges from the database --------------------------------------------------------------

    async def refresh_from(self, store: Store, sources: Collection[str] | None = None) -> None:
        """Set the gauges from the database. With `sources` (the configured ones), a source
        that left the configuration, or whose history was pruned, stops being exported: its
        last status must not keep an alert firing."""
        counts = await store.queue.counts_by_state()
        for state in JobState:
            self.jobs.labels(state.value).set(counts.get(state, 0))
        self.queue_depth.set(counts.get(JobState.QUEUED, 0))
        self.queue_oldest.set(await store.queue.oldest_queued_age() or 0.0)
        reported = [
            s
            for s in await store.queue.source_status()
            if sources is None or (s.source_name or "-") in sources
        ]
        self._forget_sources_but({s.source_name or "-" for s in reported})
        for source in reported:
            name = source.source_name or "-"
            if source.last_success_at is not None:
                self.source_last_success.labels(name).set(source.last_success_at)
            self.source_pending.labels(name).set(source.pending)
            if source.last_run_status is not None:
                for status in RUN_STATUSES:
                    value = 1 if source.last_run_status.value == status else 0
                    self.source_last_status.labels(name, status).set(value)

    def _forget_sources_but(self, names: set[str]) -> None:
        per_source = (self.source_last_success, self.source_pending, self.source_last_status)
        for gauge in per_source:
            for labels in gauge_label_sets(gauge):
                if labels[0] not in names:
                    gauge.remove(*labels)

    async def keep_fresh(
        self,
        store: Store,
        every: float = 10.0,
        gap: float = 2.0,
        sources: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """Refresh the database gauges forever (run as a background task): every `every`
        seconds, and soon after a job ends, but at most once per `gap` seconds, so a burst of
        finishing jobs costs a few queries, not one per job."""
        while True:
            self._dirty.clear()
            try:
                await self.refresh_from(store, sources() if sources else None)
            except Exception as exc:  # a failed refresh must not stop the daemon
                log.warning("metrics refresh failed: %s", exc)
            await asyncio.sleep(gap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), every - gap)


def gauge_label_sets(gauge: Gauge) -> set[tuple[str, ...]]:
    """The label values of every series `gauge` exports now, in its label order."""
    return {
        tuple(sample.labels.values()) for metric in gauge.collect() for sample in metric.samples
    }
