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
from sqlalchemy import Connection

from mirrord.errors import StoreError
from mirrord.store.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


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


async def upgrade(db: Database, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one write transaction."""
    alembic_config()  # fail with a clear message before touching the database
    await db.write(lambda conn: conn.run_sync(_upgrade, revision), "applying migrations")


async def downgrade(db: Database, revision: str) -> None:
    await db.write(lambda conn: conn.run_sync(_downgrade, revision), "reverting migrations")


async def current_revision(db: Database) -> str | None:
    """The revision the database is at; None for an empty database."""
    return await db.read(lambda conn: conn.run_sync(_current), "reading the schema revision")
