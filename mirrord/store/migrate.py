"""Alembic, driven from code: the Config is built here, so no alembic.ini is needed at run time.

The migration environment lives in the top-level `migrations/` directory (env.py,
script.py.mako, versions/). `migrations/alembic.ini` exists only for running the alembic CLI
by hand, e.g. `alembic -c migrations/alembic.ini -x database=URL upgrade head`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.errors import StoreError
from mirrord.store.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
MIGRATION_LOCK_KEY = 0x6D6972726F7264  # "mirrord"


def alembic_config() -> Config:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreError(f"database migrations not found in {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection  # env.py migrates on our transaction
    command.upgrade(config, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def lock_for_migration(conn: AsyncConnection) -> None:
    """Let one migrator at a time in, until its transaction ends.

    Taken before entering Alembic, whose `context` is process-global: two migrations must never
    be inside it at once, not even from two engines of one process. On SQLite the write
    transaction's `BEGIN IMMEDIATE` already is that lock; PostgreSQL takes an advisory lock, so
    daemons starting together migrate one after the other.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one write transaction."""
    alembic_config()  # fail with a clear message before touching the database

    async def work(conn: AsyncConnection) -> None:
        await lock_for_migration(conn)
        await conn.run_sync(_upgrade, revision)

    await db.write(work, "applying migrations")


async def downgrade(db: Database, revision: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await lock_for_migration(conn)
        await conn.run_sync(_downgrade, revision)

    await db.write(work, "reverting migrations")


async def current_revision(db: Database) -> str | None:
    """The revision the database is at; None for an empty database."""
    return await db.read(lambda conn: conn.run_sync(_current), "reading the schema revision")
