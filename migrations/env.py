"""The Alembic environment of mirrord's database (see alembic.ini for using the alembic CLI).

mirrord runs migrations inside its own write transaction (SQLite: `BEGIN IMMEDIATE`), passing
the connection in `config.attributes["connection"]`, so a migration is applied entirely or not
at all, after `lock_for_migration` (see mirrord/store/migrate.py).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Database, default_database_url
from mirrord.store.migrate import lock_for_migration
from mirrord.store.models import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move instead
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    return context.get_x_argument(as_dictionary=True).get("database") or default_database_url()


async def run_with_own_database(url: str) -> None:
    async def work(conn: AsyncConnection) -> None:
        await lock_for_migration(conn)
        await conn.run_sync(run_migrations)

    db = Database(url)
    try:
        await db.write(work, "applying migrations")
    finally:
        await db.dispose()


def main() -> None:
    if context.is_offline_mode():
        context.configure(url=database_url(), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = context.config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_with_own_database(database_url()))
    else:
        run_migrations(connection)


main()
