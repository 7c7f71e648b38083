"""The initial schema: runs, jobs (with the state-transition trigger), blob_locations, tag_state.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Constraint names are wrapped in `op.f()`: they are final, and the models' naming convention
(which Alembic applies to migrations too) must not prefix them a second time.

Everything is spelled out here rather than imported from mirrord.store.models: a migration is
a frozen record of the schema at one point, and tests check that the migrations still produce
exactly the models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time: sa.Double[float] = sa.Double()

# The legal changes of jobs.state (mirrord.store.records.TRANSITIONS, frozen at this revision).
TRANSITIONS = {
    "queued": ("running", "cancelled"),
    "running": ("succeeded", "failed", "queued", "cancelled"),
    "failed": ("queued", "cancelled"),
    "cancelled": ("queued",),
}
LEGAL = " OR ".join(
    f"(OLD.state = '{old}' AND NEW.state IN ({', '.join(repr(n) for n in new)}))"
    for old, new in TRANSITIONS.items()
)

SQLITE_TRIGGER = f"""
CREATE TRIGGER jobs_state_transition
BEFORE UPDATE OF state ON jobs
FOR EACH ROW WHEN NEW.state <> OLD.state AND NOT ({LEGAL})
BEGIN
    SELECT RAISE(ABORT, 'illegal job state transition');
END
"""

POSTGRES_FUNCTION = f"""
CREATE FUNCTION jobs_state_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ({LEGAL}) THEN
        RAISE EXCEPTION 'illegal job state transition % -> %', OLD.state, NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$
"""

POSTGRES_TRIGGER = """
CREATE TRIGGER jobs_state_transition
BEFORE UPDATE OF state ON jobs
FOR EACH ROW WHEN (NEW.state IS DISTINCT FROM OLD.state)
EXECUTE FUNCTION jobs_state_transition()
"""


def _partial_index(name: str, columns: list[str], where: str, unique: bool = False) -> None:
    condition = sa.text(where)
    op.create_index(
        name, "jobs", columns, unique=unique, sqlite_where=condition, postgresql_where=condition
    )


def _create_runs() -> None:
    op.create_table(
        "runs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("trigger", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("closed_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("jobs_total", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("jobs_succeeded", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("jobs_failed", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("jobs_cancelled", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint(
            "trigger IN ('schedule', 'manual', 'once', 'cli')", name=op.f("ck_runs_trigger")
        ),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')", name=op.f("ck_runs_status")
        ),
        sa.CheckConstraint(
            "(status = 'running') = (finished_at IS NULL)", name=op.f("ck_runs_finished")
        ),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
    )
    op.create_index("ix_runs_status_finished_at", "runs", ["status", "finished_at"])


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("run_id", Id),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("due_at", Time, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer(), nullable=False, server_default=sa.text("5")),
        sa.Column("lease_until", Time),
        sa.Column("worker", sa.Text()),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("started_at", Time),
        sa.Column("finished_at", Time),
        sa.Column("outcome", sa.Text()),
        sa.Column("reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("digest", sa.Text()),
        sa.Column("bytes_written", sa.BigInteger()),
        sa.Column("bytes_read", sa.BigInteger()),
        sa.Column("duration", sa.Double()),
        sa.CheckConstraint("kind IN ('copy', 'list')", name=op.f("ck_jobs_kind")),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_jobs_state"),
        ),
        sa.CheckConstraint(
            "state <> 'running' OR (worker IS NOT NULL AND lease_until IS NOT NULL)",
            name=op.f("ck_jobs_lease"),
        ),
        sa.CheckConstraint(
            "(state IN ('queued', 'running')) = (finished_at IS NULL)",
            name=op.f("ck_jobs_finished"),
        ),
        sa.CheckConstraint("attempts >= 0 AND max_attempts >= 1", name=op.f("ck_jobs_attempts")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_jobs_run_id_runs", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    _partial_index("uq_jobs_key_queued", ["key"], "state = 'queued'", unique=True)
    _partial_index("uq_jobs_key_running", ["key"], "state = 'running'", unique=True)
    _partial_index("ix_jobs_claim", ["priority", "due_at"], "state = 'queued'")
    _partial_index("ix_jobs_lease", ["lease_until"], "state = 'running'")
    op.create_index("ix_jobs_run_id_state", "jobs", ["run_id", "state"])
    op.create_index("ix_jobs_state_finished_at", "jobs", ["state", "finished_at"])
    op.create_index("ix_jobs_source_name_state", "jobs", ["source_name", "state"])


def _create_job_trigger() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute(POSTGRES_FUNCTION)
        op.execute(POSTGRES_TRIGGER)
    else:
        op.execute(SQLITE_TRIGGER)


def _create_blob_locations() -> None:
    op.create_table(
        "blob_locations",
        sa.Column("registry", sa.Text(), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger()),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("verified_at", Time, nullable=False),
        sa.Column("fail_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.CheckConstraint("state IN (1, 2, 3)", name=op.f("ck_blob_locations_state")),
        sa.CheckConstraint(
            "source IN ('head', 'upload', 'mount', 'manifest-put', 'src-get', 'tag-scan')",
            name=op.f("ck_blob_locations_source"),
        ),
        sa.PrimaryKeyConstraint("registry", "repo", "digest", name="pk_blob_locations"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_blob_locations_registry_digest", "blob_locations", ["registry", "digest"])


def _create_tag_state() -> None:
    op.create_table(
        "tag_state",
        sa.Column("registry", sa.Text(), nullable=False),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("tag", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("source_ref", sa.Text(), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False, server_default=sa.text("''")),
        sa.Column("copied_at", Time, nullable=False),
        sa.Column("checked_at", Time, nullable=False),
        sa.PrimaryKeyConstraint("registry", "repo", "tag", name="pk_tag_state"),
    )


def upgrade() -> None:
    _create_runs()
    _create_jobs()
    _create_job_trigger()
    _create_blob_locations()
    _create_tag_state()


def _drop_job_trigger() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS jobs_state_transition ON jobs")
        op.execute("DROP FUNCTION IF EXISTS jobs_state_transition()")
    else:
        op.execute("DROP TRIGGER IF EXISTS jobs_state_transition")


def downgrade() -> None:
    op.drop_table("tag_state")
    op.drop_table("blob_locations")
    _drop_job_trigger()
    op.drop_table("jobs")
    op.drop_table("runs")
