"""The migrations produce exactly the models, apply at open, and go down and up again."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from mirrord.errors import StoreError
from mirrord.store import Store, migrate
from mirrord.store.db import Database
from mirrord.store.models import metadata

BROKEN_MIGRATION = '''"""A migration that fails half-way."""
import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer(), primary_key=True))
    op.execute("INSERT INTO jobs (id) VALUES (1)")  # violates NOT NULL constraints


def downgrade() -> None:
    op.drop_table("half_done")
'''


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, metadata))


def _objects(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {
        table: {index["name"] or "" for index in inspector.get_indexes(table)}
        | {check["name"] or "" for check in inspector.get_check_constraints(table)}
        for table in inspector.get_table_names()
    }


async def test_migrations_produce_exactly_the_models(store: Store) -> None:
    differences = await store.db.read(lambda c: c.run_sync(_differences), "comparing")
    assert differences == []


async def test_migrations_create_every_index_and_check_of_the_models(store: Store) -> None:
    found = await store.db.read(lambda c: c.run_sync(_objects), "inspecting")
    for table in metadata.sorted_tables:
        expected = {index.name for index in table.indexes} | {
            str(c.name) for c in table.constraints if c.__class__.__name__ == "CheckConstraint"
        }
        assert expected <= found[table.name], table.name


async def test_open_applies_migrations_and_records_the_head(store: Store) -> None:
    assert await migrate.current_revision(store.db) == migrate.head_revision()


async def test_downgrade_to_base_and_upgrade_again(store: Store) -> None:
    await migrate.downgrade(store.db, "base")
    assert await migrate.current_revision(store.db) is None
    tables = await store.db.read(lambda c: c.run_sync(lambda s: inspect(s).get_table_names()), "t")
    assert set(tables) <= {"alembic_version"}
    await migrate.upgrade(store.db)
    assert await store.db.read(lambda c: c.run_sync(_differences), "comparing") == []


async def test_daemons_opening_one_new_database_at_once_migrate_it_once(
    database_url: str,
) -> None:
    stores = await asyncio.gather(*(Store.open(database_url) for _ in range(4)))
    try:
        revisions = {await migrate.current_revision(s.db) for s in stores}
        assert revisions == {migrate.head_revision()}
    finally:
        for s in stores:
            await s.close()


async def test_a_second_open_of_a_migrated_database_changes_nothing(database_url: str) -> None:
    for _ in range(2):
        store = await Store.open(database_url)
        await store.close()
    db = Database(database_url)
    try:
        assert await db.read(lambda c: c.run_sync(_differences), "comparing") == []
    finally:
        await db.dispose()


async def test_a_migration_that_fails_half_way_leaves_the_database_untouched(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    broken = BROKEN_MIGRATION.replace("{head}", str(migrate.head_revision()))
    (scripts / "versions" / "9999_broken.py").write_text(broken)
    monkeypatch.setattr(migrate, "MIGRATIONS_DIR", scripts)
    with pytest.raises(StoreError, match="applying migrations"):
        await Store.open(database_url)
    monkeypatch.undo()

    db = Database(database_url)
    try:
        tables = await db.read(lambda c: c.run_sync(lambda s: inspect(s).get_table_names()), "t")
        assert set(tables) <= {"alembic_version"}  # every migration ran in one transaction
        assert await migrate.current_revision(db) is None
    finally:
        await db.dispose()
