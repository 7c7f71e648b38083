"""The persistent store: the only code in mirrord that speaks SQL.

async with await Store.open(url) as store:
    run_id = await store.queue.create_run("schedule")
    await store.queue.enqueue(requests, run_id)
    jobs = await store.queue.claim("host:pid", limit=4, lease_seconds=60)
"""

from mirrord.store.blobs import BlobIndex
from mirrord.store.db import Database, default_database_url
from mirrord.store.queue import Queue
from mirrord.store.records import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    TRANSITIONS,
    BlobLocation,
    BlobRecord,
    BlobSource,
    BlobState,
    EnqueueResult,
    FailedJob,
    Job,
    JobKind,
    JobState,
    NewJob,
    PruneResult,
    RequeueResult,
    Run,
    RunStatus,
    RunSummary,
    RunTrigger,
    SourceStatus,
    Success,
    TagState,
    TagUpdate,
)
from mirrord.store.store import Store
from mirrord.store.tags import TagStates

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "BlobIndex",
    "BlobLocation",
    "BlobRecord",
    "BlobSource",
    "BlobState",
    "Database",
    "EnqueueResult",
    "FailedJob",
    "Job",
    "JobKind",
    "JobState",
    "NewJob",
    "PruneResult",
    "Queue",
    "RequeueResult",
    "Run",
    "RunStatus",
    "RunSummary",
    "RunTrigger",
    "SourceStatus",
    "Store",
    "Success",
    "TagState",
    "TagStates",
    "TagUpdate",
    "default_database_url",
]
