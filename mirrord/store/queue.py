"""The job queue: one class over the database, every verb async, every result a frozen record.

    enqueue ─► queued ─claim─► running ─succeed─► succeeded
                 ▲  │            │  │
                 │  │            │  └─fail, no retry or attempts used up─► failed
                 │  └─cancel─┐   └─cancel / superseded─┐                    │
                 │           ▼                         ▼                    │
                 │        cancelled ◄──────────────────┘◄─superseded────────┤
                 └──── fail(retry_at) · requeue (drain) · reap (lease expired) · retry

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
