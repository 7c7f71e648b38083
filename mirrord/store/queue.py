"""The job queue: one class over the database, every verb async, every result a frozen record.

    queued    → running (claim) · cancelled (cancel)
    running   → succeeded (succeed) · failed (fail) · cancelled (cancel, superseded)
                · queued (fail with retry_at, requeue on drain, reap after the lease expired)
    failed    → queued (retry) · cancelled (a retry superseded by a queued sibling)
    cancelled → queued (retry)
    succeeded → nothing, ever

At most one queued and one running job per key (partial unique indexes). A job that would go
back to the queue while a sibling with its key is already queued ends `cancelled` with reason
`superseded` instead: the sibling does the same work. The database enforces the states (CHECK),
the one-per-key rule (indexes) and the legal transitions (a trigger; records.TRANSITIONS).
"""

from __future__ import annotations

from mirrord.store.jobs import RETRY_PRIORITY, JobVerbs
from mirrord.store.runs import RunVerbs
from mirrord.store.status import StatusVerbs


class Queue(JobVerbs, RunVerbs, StatusVerbs):
    """Job lifecycle (jobs.py), runs and retention (runs.py), read-only views (status.py)."""


__all__ = ["RETRY_PRIORITY", "Queue"]
