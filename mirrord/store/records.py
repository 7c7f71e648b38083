"""What the store hands out and takes in: states as enums, results as frozen dataclasses. [pure]

Nothing outside `mirrord.store` sees a SQLAlchemy row or ORM object; every verb returns one of
these.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any

from mirrord.model import CopyRequest

REASON_MAX = 64
ERROR_MAX = 2000


class JobKind(StrEnum):
    COPY = "copy"
    LIST = "list"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})

# Every legal change of `jobs.state`. The database enforces the same table with a trigger
# (migrations/versions/0001_initial.py); tests check that the two agree.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.QUEUED, JobState.CANCELLED}
    ),
    JobState.FAILED: frozenset({JobState.QUEUED, JobState.CANCELLED}),  # retry / superseded
    JobState.CANCELLED: frozenset({JobState.QUEUED}),  # retry
    JobState.SUCCEEDED: frozenset(),
}


class RunTrigger(StrEnum):
    SCHEDULE = "schedule"
    MANUAL = "manual"
    ONCE = "once"
    CLI = "cli"


class RunStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BlobState(IntEnum):
    """Ordered by strength, as protocol.md §4.2: a referenced blob is mountable everywhere."""

    PRESENT = 1  # verified by HEAD 200, upload 201, mount 201 or GET
    REFERENCED = 2  # referenced by a manifest the registry accepted
    SUSPECT = 3  # failed mounts or an unexpected 404: neither skip nor mount from it


class BlobSource(StrEnum):
    HEAD = "head"
    UPLOAD = "upload"
    MOUNT = "mount"
    MANIFEST_PUT = "manifest-put"
    SRC_GET = "src-get"
    TAG_SCAN = "tag-scan"


# Reasons the store itself writes into `jobs.reason`.
SUPERSEDED = "superseded"
LEASE_EXPIRED = "lease_expired"
CANCELLED_BY_USER = "cancelled"


def _columns(cls: type[Any], row: Mapping[Any, Any]) -> dict[str, Any]:
    return {f.name: row[f.name] for f in fields(cls)}


def bounded(text: str | None, limit: int) -> str | None:
    """`text` cut to `limit` characters (an ellipsis marks the cut)."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. Keys are global across kinds: list jobs should use their own prefix."""

    kind: JobKind
    key: str
    payload: Mapping[str, Any]
    source_name: str = ""
    max_attempts: int = 5

    @classmethod
    def copy(cls, request: CopyRequest, max_attempts: int = 5) -> NewJob:
        return cls(JobKind.COPY, request.key, request.to_json(), request.source_name, max_attempts)

    @classmethod
    def listing(
        cls, key: str, payload: Mapping[str, Any], source_name: str = "", max_attempts: int = 5
    ) -> NewJob:
        return cls(JobKind.LIST, key, payload, source_name, max_attempts)

    def payload_text(self) -> str:
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: JobKind
    key: str
    source_name: str
    run_id: int | None
    payload: Mapping[str, Any]
    state: JobState
    priority: int
    due_at: float
    attempts: int
    max_attempts: int
    lease_until: float | None
    worker: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    outcome: str | None
    reason: str | None
    error: str | None
    digest: str | None
    bytes_written: int | None
    bytes_read: int | None
    duration: float | None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        values = _columns(cls, row)
        values["kind"] = JobKind(row["kind"])
        values["state"] = JobState(row["state"])
        values["payload"] = json.loads(row["payload"])
        return cls(**values)

    def copy_request(self) -> CopyRequest:
        """The CopyRequest a copy job carries."""
        if self.kind is not JobKind.COPY:
            raise ValueError(f"job {self.id} is a {self.kind} job, not a copy job")
        return CopyRequest.from_json(dict(self.payload))

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.kind} {self.key!r} {self.state} attempt {self.attempts}>"


@dataclass(frozen=True, slots=True)
class TagUpdate:
    """What a copy job learnt about its destination tag (written with the job's success)."""

    registry: str
    repo: str
    tag: str
    digest: str
    source_ref: str
    source_name: str = ""
    copied: bool = True  # False: the tag was found up to date; the last copy time is kept


@dataclass(frozen=True, slots=True)
class Success:
    """One job's success, for `succeed_many`."""

    job_id: int
    worker: str
    outcome: str
    digest: str | None = None
    bytes_written: int = 0
    bytes_read: int = 0
    duration: float | None = None
    tag: TagUpdate | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """`job_ids` are the new jobs; a key that already had a queued job counts as a duplicate."""

    job_ids: tuple[int, ...]
    duplicates: int

    @property
    def enqueued(self) -> int:
        return len(self.job_ids)

    def __repr__(self) -> str:
        return f"<EnqueueResult enqueued={self.enqueued} duplicates={self.duplicates}>"


@dataclass(frozen=True, slots=True)
class RequeueResult:
    """What a reap, drain or retry did, by job id."""

    requeued: tuple[int, ...] = ()
    superseded: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.requeued or self.superseded or self.failed)

    def __repr__(self) -> str:
        return (
            f"<RequeueResult requeued={len(self.requeued)} superseded={len(self.superseded)} "
            f"failed={len(self.failed)}>"
        )


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    trigger: RunTrigger
    status: RunStatus
    started_at: float
    closed_at: float | None
    finished_at: float | None
    jobs_total: int
    jobs_succeeded: int
    jobs_failed: int
    jobs_cancelled: int

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Run:
        values = _columns(cls, row)
        values["trigger"] = RunTrigger(row["trigger"])
        values["status"] = RunStatus(row["status"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class FailedJob:
    id: int
    key: str
    reason: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RunSummary:
    run: Run
    by_state: Mapping[JobState, int]
    by_outcome: Mapping[str, int]
    failed: tuple[FailedJob, ...]


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source_name: str
    last_success_at: float | None  # end of the newest succeeded run holding this source's jobs
    last_run_id: int | None
    last_run_status: RunStatus | None
    pending: int  # queued + running jobs


@dataclass(frozen=True, slots=True)
class PruneResult:
    jobs_deleted: int
    runs_deleted: int


@dataclass(frozen=True, slots=True)
class TagState:
    registry: str
    repo: str
    tag: str
    digest: str
    source_ref: str
    source_name: str
    copied_at: float
    checked_at: float


@dataclass(frozen=True, slots=True)
class BlobRecord:
    """One observation for the blob-location index."""

    registry: str
    repo: str
    digest: str
    size: int | None
    source: BlobSource
    state: BlobState = BlobState.PRESENT


@dataclass(frozen=True, slots=True)
class BlobLocation:
    registry: str
    repo: str
    digest: str
    size: int | None
    state: BlobState
    source: BlobSource
    verified_at: float
    fail_count: int = field(default=0)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> BlobLocation:
        values = _columns(cls, row)
        values["state"] = BlobState(row["state"])
        values["source"] = BlobSource(row["source"])
        return cls(**values)
