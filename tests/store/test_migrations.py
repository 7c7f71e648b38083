"""The migrations produce exactly the models, apply at open, and go down and up again."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from mirrord.errors import SchemaTooNew, StoreError
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


def _text(item: Any) -> str:
    """One inspector record as text (SQL expressions such as partial-index predicates too)."""
    return json.dumps(item, default=str, sort_keys=True)


def _schema(connection: Connection) -> dict[str, Any]:
    """Everything the inspector sees of each table, comparable across two databases."""
    inspector = inspect(connection)

    def table(name: str) -> dict[str, Any]:
        columns = [
            (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
            for c in inspector.get_columns(name)
        ]
        return {
            "columns": columns,
            "primary key": _text(inspector.get_pk_constraint(name)),
            "foreign keys": sorted(map(_text, inspector.get_foreign_keys(name))),
            "indexes": sorted(map(_text, inspector.get_indexes(name))),
            "checks": sorted(map(_text, inspector.get_check_constraints(name))),
            "uniques": sorted(map(_text, inspector.get_unique_constraints(name))),
        }

    tables = {name: table(name) for name in sorted(inspector.get_table_names())}
    return {**tables, "triggers": _triggers(connection)}


def _triggers(connection: Connection) -> list[tuple[str, ...]]:
    """Triggers (and on PostgreSQL the functions they run), by name and table."""
    if connection.dialect.name == "sqlite":
        query = "SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'"
    else:
        query = """SELECT tgname, tgrelid::regclass::text, tgfoid::regproc::text
                   FROM pg_trigger WHERE NOT tgisinternal"""
    return sorted(tuple(row) for row in connection.exec_driver_sql(query))


@pytest.fixture
async def migrated(database_url: str) -> AsyncIterator[Database]:
    """A new database brought to the head by running every migration (not built from the
    models, as `Store.open` builds a new database)."""
    db = Database(database_url)
    await migrate.upgrade(db, str(migrate.head_revision()))
    yield db
    await db.dispose()


async def test_migrations_produce_exactly_the_models(migrated: Database) -> None:
    differences = await migrated.read(lambda c: c.run_sync(_differences), "comparing")
    assert differences == []


async def test_a_new_database_is_built_as_the_migrations_build_it(
    migrated: Database, other_database_url: str
) -> None:
    built = Database(other_database_url)
    try:
        await migrate.upgrade(built)  # new and empty: made from the models, then stamped
        assert await migrate.current_revision(built) == migrate.head_revision()
        expected = await migrated.read(lambda c: c.run_sync(_schema), "inspecting")
        assert [t[0] for t in expected["triggers"]] == ["jobs_state_transition"]
        assert await built.read(lambda c: c.run_sync(_schema), "inspecting") == expected
    finally:
        await built.dispose()


async def test_migrations_create_every_index_and_check_of_the_models(migrated: Database) -> None:
    found = await migrated.read(lambda c: c.run_sync(_objects), "inspecting")
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
    store = await Store.open(database_url)  # at today's head; the next release's upgrade fails
    await store.close()
    head = migrate.head_revision()
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
        assert "half_done" not in tables  # the migration ran in one transaction
        assert await migrate.current_revision(db) == head
        assert await db.read(lambda c: c.run_sync(_differences), "comparing") == []
    finally:
        await db.dispose()


async def test_an_older_mirrord_refuses_a_database_a_newer_one_migrated(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It used to die in Alembic with a 100-line traceback (exit 1, restarted by systemd)."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    newer = BROKEN_MIGRATION.replace("{head}", str(migrate.head_revision())).replace(
        'op.execute("INSERT INTO jobs (id) VALUES (1)")  # violates NOT NULL constraints', ""
    )
    (scripts / "versions" / "9999_newer.py").write_text(newer)
    with monkeypatch.context() as newer_release:
        newer_release.setattr(migrate, "MIGRATIONS_DIR", scripts)
        await (await Store.open(database_url)).close()

    with pytest.raises(SchemaTooNew) as caught:
        await Store.open(database_url)

    assert str(caught.value).startswith(
        f"the database schema is at revision 9999, newer than this mirrord knows "
        f"(its newest is {migrate.head_revision()})"
    )
    assert not caught.value.transient
