"""The tables, as SQLAlchemy Core. Migrations must produce exactly this (a test compares them).

Times are float epoch seconds. States are text, CHECK-constrained to their enum; the legal
*changes* of `jobs.state` are enforced by a trigger, created with the jobs table.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ColumnElement,
    Connection,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    event,
    literal_column,
    text,
)

from mirrord.store.records import (
    TRANSITIONS,
    BlobSource,
    BlobState,
    JobKind,
    JobState,
    RunStatus,
    RunTrigger,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Time: Double[float] = Double()


def has_state(column: ColumnElement[str], *states: StrEnum) -> ColumnElement[bool]:
    """`column = 'state'` (or `IN (…)`) with the values inlined rather than bound: both query
    planners use a partial index (`WHERE state = 'queued'`) only for a query that spells out
    the same literal."""
    literals: list[ColumnElement[Any]] = [literal_column(f"'{state.value}'") for state in states]
    return column == literals[0] if len(literals) == 1 else column.in_(literals)


def one_of(column: str, values: Iterable[Enum]) -> str:
    """SQL for `column IN (...)` over an enum's values."""
    quoted = ", ".join(str(v.value) if isinstance(v.value, int) else f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"


runs = Table(
    "runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("trigger", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("started_at", Time, nullable=False),
    Column("closed_at", Time),  # planning done: no more jobs will join this run
    Column("finished_at", Time),
    Column("jobs_total", Integer, nullable=False, server_default=text("0")),
    Column("jobs_succeeded", Integer, nullable=False, server_default=text("0")),
    Column("jobs_failed", Integer, nullable=False, server_default=text("0")),
    Column("jobs_cancelled", Integer, nullable=False, server_default=text("0")),
    CheckConstraint(one_of("trigger", RunTrigger), name="trigger"),
    CheckConstraint(one_of("status", RunStatus), name="status"),
    CheckConstraint("(status = 'running') = (finished_at IS NULL)", name="finished"),
)
Index("ix_runs_status_finished_at", runs.c.status, runs.c.finished_at)

jobs = Table(
    "jobs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("kind", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("source_name", Text, nullable=False, server_default=text("''")),
    Column("run_id", Id, ForeignKey("runs.id", ondelete="SET NULL")),
    Column("payload", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("due_at", Time, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("5")),
    Column("lease_until", Time),
    Column("worker", Text),
    Column("created_at", Time, nullable=False),
    Column("started_at", Time),
    Column("finished_at", Time),
    Column("outcome", Text),
    Column("reason", Text),
    Column("error", Text),
    Column("digest", Text),
    Column("bytes_written", BigInteger),
    Column("bytes_read", BigInteger),
    Column("duration", Double),
    CheckConstraint(one_of("kind", JobKind), name="kind"),
    CheckConstraint(one_of("state", JobState), name="state"),
    CheckConstraint(
        "state <> 'running' OR (worker IS NOT NULL AND lease_until IS NOT NULL)", name="lease"
    ),
    CheckConstraint("(state IN ('queued', 'running')) = (finished_at IS NULL)", name="finished"),
    CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
)


def _legal_changes() -> str:
    """TRANSITIONS as an SQL condition on OLD.state and NEW.state."""

    def listed(states: frozenset[JobState]) -> str:
        return ", ".join(f"'{state.value}'" for state in JobState if state in states)

    return " OR ".join(
        f"(OLD.state = '{old.value}' AND NEW.state IN ({listed(new)}))"
        for old, new in TRANSITIONS.items()
        if new
    )


# The database itself refuses an illegal change of jobs.state, whatever SQL reaches it.
_STATE_TRIGGER_DDL = {
    "sqlite": [
        f"""CREATE TRIGGER jobs_state_transition
BEFORE UPDATE OF state ON jobs
FOR EACH ROW WHEN NEW.state <> OLD.state AND NOT ({_legal_changes()})
BEGIN
    SELECT RAISE(ABORT, 'illegal job state transition');
END"""
    ],
    "postgresql": [
        f"""CREATE FUNCTION jobs_state_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ({_legal_changes()}) THEN
        RAISE EXCEPTION 'illegal job state transition % -> %', OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$""",
        """CREATE TRIGGER jobs_state_transition
BEFORE UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
EXECUTE FUNCTION jobs_state_transition()""",
    ],
}


def _create_state_trigger(table: Table, connection: Connection, **_: Any) -> None:
    for statement in _STATE_TRIGGER_DDL[connection.dialect.name]:
        connection.exec_driver_sql(statement)


event.listen(jobs, "after_create", _create_state_trigger)

_queued = has_state(jobs.c.state, JobState.QUEUED)
_running = has_state(jobs.c.state, JobState.RUNNING)
# The dedup rule: at most one queued and one running job per key.
Index(
    "uq_jobs_key_queued",
    jobs.c.key,
    unique=True,
    sqlite_where=_queued,
    postgresql_where=_queued,
)
Index(
    "uq_jobs_key_running",
    jobs.c.key,
    unique=True,
    sqlite_where=_running,
    postgresql_where=_running,
)
# The claim reads queued jobs in its own order: priority (highest first), due time, id.
Index(
    "ix_jobs_claim",
    jobs.c.priority.desc(),
    jobs.c.due_at,
    jobs.c.id,
    sqlite_where=_queued,
    postgresql_where=_queued,
)
# The reaper scans running jobs by lease.
Index(
    "ix_jobs_lease",
    jobs.c.lease_until,
    sqlite_where=_running,
    postgresql_where=_running,
)
Index("ix_jobs_run_id_state", jobs.c.run_id, jobs.c.state)
Index("ix_jobs_state_finished_at", jobs.c.state, jobs.c.finished_at)
Index("ix_jobs_source_name_state", jobs.c.source_name, jobs.c.state)

blob_locations = Table(
    "blob_locations",
    metadata,
    Column("registry", Text, nullable=False),
    Column("repo", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("size", BigInteger),
    Column("state", Integer, nullable=False),
    Column("source", Text, nullable=False),
    Column("verified_at", Time, nullable=False),
    Column("fail_count", Integer, nullable=False, server_default=text("0")),
    PrimaryKeyConstraint("registry", "repo", "digest"),
    CheckConstraint(one_of("state", BlobState), name="state"),
    CheckConstraint(one_of("source", BlobSource), name="source"),
    sqlite_with_rowid=False,
)
Index("ix_blob_locations_registry_digest", blob_locations.c.registry, blob_locations.c.digest)

tag_state = Table(
    "tag_state",
    metadata,
    Column("registry", Text, nullable=False),
    Column("repo", Text, nullable=False),
    Column("tag", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("source_ref", Text, nullable=False),
    Column("source_name", Text, nullable=False, server_default=text("''")),
    Column("copied_at", Time, nullable=False),
    Column("checked_at", Time, nullable=False),
    PrimaryKeyConstraint("registry", "repo", "tag"),
)
