"""The claim index follows the claim's order: priority (highest first), due time, id.

On (priority, due_at) SQLite preferred the (state, finished_at) index and sorted every queued
job on each claim, so a claim cost grew with the queue (a first sync of 100,000 tags sorted
100,000 rows per batch of 16). In the claim's own order, a claim reads only the jobs it takes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("state = 'queued'")


def _claim_index(columns: list[str | sa.TextClause]) -> None:
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.create_index(
        "ix_jobs_claim", "jobs", columns, sqlite_where=QUEUED, postgresql_where=QUEUED
    )


def upgrade() -> None:
    _claim_index([sa.text("priority DESC"), "due_at", "id"])


def downgrade() -> None:
    _claim_index(["priority", "due_at"])
