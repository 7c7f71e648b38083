"""The operator's view: runs, queue, sources, failures. Shared by `mirrord status`, `mirrord jobs`
and the `/api/status`, `/api/jobs` endpoints, so both always show the same facts."""

from __future__ import annotations

import time
from typing import Any

from mirrord.store import Job, JobState, Store


def _when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def job_facts(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind.value,
        "key": job.key,
        "source": job.source_name,
        "run": job.run_id,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "outcome": job.outcome,
        "reason": job.reason,
        "error": job.error,
        "digest": job.digest,
        "bytes": job.bytes_written,
        "duration": job.duration,
        "created": _when(job.created_at),
        "due": _when(job.due_at) if job.state is JobState.QUEUED else None,
        "finished": _when(job.finished_at),
    }


async def collect_status(store: Store, runs: int = 5) -> dict[str, Any]:
    view = await store.queue.overview(runs=runs, failed=20)
    return {
        "queue": {state.value: view.counts.get(state, 0) for state in JobState},
        "oldest_queued_seconds": view.oldest_queued_seconds,
        "runs": [
            {
                "id": run.id,
                "trigger": run.trigger.value,
                "status": run.status.value,
                "started": _when(run.started_at),
                "finished": _when(run.finished_at),
                "jobs": run.jobs_total,
                "succeeded": run.jobs_succeeded,
                "failed": run.jobs_failed,
                "cancelled": run.jobs_cancelled,
            }
            for run in view.runs
        ],
        "sources": [
            {
                "name": s.source_name,
                "last_success": _when(s.last_success_at),
                "last_run": s.last_run_id,
                "last_run_status": s.last_run_status.value if s.last_run_status else None,
                "pending": s.pending,
            }
            for s in view.sources
        ],
        "recent_failures": [job_facts(job) for job in view.failed],
    }


def render_status(facts: dict[str, Any]) -> str:
    lines = ["Queue: " + ", ".join(f"{k} {v}" for k, v in facts["queue"].items())]
    if facts["oldest_queued_seconds"]:
        lines[0] += f" (oldest queued {facts['oldest_queued_seconds']:.0f}s)"
    lines.append("")
    lines.append("Runs:")
    for run in facts["runs"] or []:
        lines.append(
            f"  #{run['id']:<5} {run['trigger']:<9} {run['status']:<10} started {run['started']}"
            f"  jobs {run['jobs']} ok {run['succeeded']} failed {run['failed']}"
        )
    if not facts["runs"]:
        lines.append("  (none yet)")
    lines.append("")
    lines.append("Sources:")
    for source in facts["sources"]:
        lines.append(
            f"  {source['name'] or '-':<30} last success {source['last_success'] or 'never'}"
            f"  last run {source['last_run_status'] or '-'}  pending {source['pending']}"
        )
    if facts["recent_failures"]:
        lines.append("")
        lines.append("Recent failures:")
        for job in facts["recent_failures"]:
            lines.append(f"  job {job['id']} {job['key']}: {job['reason']}: {job['error']}")
    return "\n".join(lines)


def render_jobs(jobs: list[Job]) -> str:
    if not jobs:
        return "no jobs"
    rows = [("ID", "STATE", "KIND", "TRIES", "KEY", "RESULT")]
    for job in jobs:
        result = job.outcome or ": ".join(part for part in (job.reason, job.error) if part)
        rows.append(
            (
                str(job.id),
                job.state.value,
                job.kind.value,
                f"{job.attempts}/{job.max_attempts}",
                job.key,
                result or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:5])) + "  " + r[5] for r in rows
    )
