"""Alembic, driven from code: the Config is built here, so no alembic.ini is needed at run time.

The migration environment lives in the top-level `migrations/` directory (env.py,
script.py.mako, versions/). `migrations/alembic.ini` exists only for running the alembic CLI
by hand, e.g. `alembic -c migrations/alembic.ini -x database=URL upgrade head`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    inspect,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.errors import SchemaTooNew, StoreError
from mirrord.store.db import Database
from mirrord.store.models import metadata


def migrations_dir() -> Path:
    """The Alembic environment: the installed `mirrord_migrations` package (a wheel ships the
    top-level migrations/ under that name), else migrations/ next to the source tree."""
    spec = find_spec("mirrord_migrations")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parents[2] / "migrations"


MIGRATIONS_DIR = migrations_dir()
MIGRATION_LOCK_KEY = 0x6D6972726F7264  # "mirrord"
_REVISION = re.compile(r'^(down_revision|revision)\b[^=]*=\s*"([^"]+)"', re.MULTILINE)

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported only when a migration has to run: a database already at the head (every
# start but the first after an upgrade) is checked with one SELECT, and a new, empty database
# is made from the models and stamped with the head (Alembic's "building an up to date database
# from scratch"), which keeps start-up fast. tests/store/test_migrations.py proves the
# migrations and the models describe one schema, so both ways give the same database.

# Alembic's own bookkeeping table, as `alembic stamp` creates it.
_VERSION_TABLE = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _check_migrations_dir() -> None:
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreError(f"database migrations not found in {MIGRATIONS_DIR}")


def alembic_config() -> Config:
    from alembic.config import Config

    _check_migrations_dir()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def head_from_files() -> str | None:
    """The head revision read from the version files (no Alembic import); None if unclear."""
    return _head_in(MIGRATIONS_DIR)


def known_revisions() -> frozenset[str]:
    """Every revision this mirrord's migrations know (read from the version files)."""
    return _revisions_in(MIGRATIONS_DIR)[0]


@cache
def _head_in(directory: Path) -> str | None:
    revisions, parents = _revisions_in(directory)
    heads = revisions - parents
    return next(iter(heads)) if len(heads) == 1 else None


@cache
def _revisions_in(directory: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(revisions, revisions something revises) of the version files."""
    found: dict[str, set[str]] = {"revision": set(), "down_revision": set()}
    for path in (directory / "versions").glob("*.py"):
        for key, value in _REVISION.findall(path.read_text(encoding="utf-8")):
            found[key].add(value)
    return frozenset(found["revision"]), frozenset(found["down_revision"])


def check_not_newer(stored: str | None) -> None:
    """Refuse a database a newer mirrord has migrated: this one would misread it."""
    if stored is not None and stored not in known_revisions():
        raise SchemaTooNew(
            f"the database schema is at revision {stored}, newer than this mirrord knows "
            f"(its newest is {head_from_files()}): run the newer mirrord, or restore a backup "
            "taken before the upgrade"
        )


async def _stored_revision(db: Database) -> str | None:
    async def work(conn: AsyncConnection) -> str | None:
        try:
            row = (await conn.execute(text("SELECT version_num FROM alembic_version"))).first()
        except DBAPIError:  # no table yet: a new database
            return None
        return None if row is None else str(row[0])

    return await db.read(work, "reading the schema revision")


def _upgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection  # env.py migrates on our transaction
    command.upgrade(config, revision)


def _is_empty(connection: Connection) -> bool:
    """No table of mirrord's and no Alembic version table: a database never migrated."""
    present = set(inspect(connection).get_table_names())
    return not present & ({_VERSION_TABLE.name} | set(metadata.tables))


def _create_at_head(connection: Connection, head: str) -> None:
    metadata.create_all(connection)
    _VERSION_TABLE.create(connection)
    connection.execute(_VERSION_TABLE.insert().values(version_num=head))


def _build_or_upgrade(connection: Connection, revision: str) -> None:
    head = head_from_files()
    if revision == "head" and head is not None and _is_empty(connection):
        _create_at_head(connection, head)
    else:
        _upgrade(connection, revision)


def _downgrade(connection: Connection, revision: str) -> None:
    from alembic import command

    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


def _current(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

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
    """Bring the schema to `revision` in one write transaction.

    For "head", a new, empty database is built from the models and stamped; naming a revision
    always runs the migrations (tests do, to check them against the models).
    """
    head = head_from_files()
    stored = await _stored_revision(db)
    if revision == "head" and head is not None and stored == head:
        return
    _check_migrations_dir()  # fail with a clear message before touching the database
    check_not_newer(stored)

    async def work(conn: AsyncConnection) -> None:
        await lock_for_migration(conn)
        await conn.run_sync(_build_or_upgrade, revision)

    await db.write(work, "applying migrations")


async def downgrade(db: Database, revision: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await lock_for_migration(conn)
        await conn.run_sync(_downgrade, revision)

    await db.write(work, "reverting migrations")


async def current_revision(db: Database) -> str | None:
    """The revision the database is at; None for an empty database."""
    return await db.read(lambda conn: conn.run_sync(_current), "reading the schema revision")
