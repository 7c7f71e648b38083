"""`mirrord db upgrade` and `mirrord db current`: the database schema."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from mirrord.cli import main
from mirrord.cli.common import run
from mirrord.store import migrate
from mirrord.store.db import Database, default_database_url

T = TypeVar("T")

database_option = click.option(
    "--database",
    "url",
    metavar="URL",
    envvar="MIRRORD_DATABASE",
    help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB "
    "(default: $MIRRORD_DATABASE, else mirrord.db in the state directory)",
)


def _run(work: Callable[[Database], Coroutine[Any, Any, T]], url: str | None, create: bool) -> T:
    """Run `work` on the database; errors end the command as every other command's do (one
    `mirrord: error:` line, the documented exit codes)."""

    async def go() -> T:
        db = Database(url or default_database_url(), create=create)
        try:
            return await work(db)
        finally:
            await db.dispose()

    return run(go())


def _describe(revision: str | None, head: str | None) -> str:
    if revision == head:
        return f"{revision} (head)"
    if revision is not None and revision not in migrate.known_revisions():
        return f"{revision} (newer than this mirrord, whose head is {head})"
    return f"{revision or 'empty'} (head is {head})"


@main.group()
def db() -> None:
    """The database schema (migrations are also applied automatically at start)."""


@db.command()
@database_option
def upgrade(url: str | None) -> None:
    """Bring the database schema up to date."""

    async def work(database: Database) -> str | None:
        await migrate.upgrade(database)
        return await migrate.current_revision(database)

    click.echo(
        f"database at revision {_describe(_run(work, url, create=True), migrate.head_revision())}"
    )


@db.command()
@database_option
def current(url: str | None) -> None:
    """Show the schema revision of the database."""
    revision = _run(migrate.current_revision, url, create=False)
    click.echo(_describe(revision, migrate.head_revision()))
