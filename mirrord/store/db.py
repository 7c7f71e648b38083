"""Engines, transactions and the one boundary where database errors become `StoreError`.

SQLite (the default) gets two engines on the same file:

- a *write* engine whose transactions start with `BEGIN IMMEDIATE`, so a writer takes the write
  lock up front and waits for it under `busy_timeout`, instead of failing with SQLITE_BUSY when a
  deferred transaction tries to upgrade its lock half-way; within one process writers also queue
  on an asyncio lock, so they wait on the event loop rather than in SQLite's busy handler;
- a *read* engine whose transactions start with a plain (deferred) `BEGIN`, so readers see one
  WAL snapshot and never take the write lock.

Both disable the sqlite3 driver's own transaction handling (`isolation_level = None`) and emit
BEGIN themselves, which is SQLAlchemy's documented recipe. The file is put in WAL mode once, when
a `Database` is made, before either engine connects. PostgreSQL uses one asyncpg engine
for both.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Table, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from mirrord.errors import StoreError
from mirrord.tasks import to_completion

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql

T = TypeVar("T")
Clock = Callable[[], float]

BUSY_TIMEOUT_MS = 30_000
# PostgreSQL SQLSTATEs worth retrying the whole transaction for: a serialization failure, a
# deadlock, and a unique violation (a racing enqueue inserted a queued sibling between our check
# and our requeue; the retry sees it and supersedes instead).
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "23505"})
_RETRIES = 5


def default_database_url() -> str:
    """`$MIRRORD_DATABASE`, else an SQLite file in the state directory."""
    if url := os.environ.get("MIRRORD_DATABASE"):
        return url
    if state := os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        base = Path(state.split(":")[0])
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        base = Path(xdg) / "mirrord"
    return f"sqlite+aiosqlite:///{base / 'mirrord.db'}"


_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def parse_url(url: str) -> URL:
    """Parse a database URL; `sqlite://` and `postgresql://` get their asyncio drivers."""
    try:
        parsed = make_url(url)
        if parsed.port is not None and not 0 < parsed.port < 65536:
            raise ValueError("port out of range")
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # The URL is not repeated: it may hold a password.
        raise StoreError(
            "invalid database URL (expected sqlite:///PATH or postgresql://HOST[:PORT]/NAME; "
            "a port is a number from 1 to 65535)"
        ) from None
    if parsed.drivername in _DRIVERS:
        parsed = parsed.set(drivername=_DRIVERS[parsed.drivername])
    if parsed.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
        raise StoreError(
            f"unsupported database {parsed.drivername!r}: "
            "use sqlite+aiosqlite:///PATH or postgresql+asyncpg://…"
        )
    return parsed


def sqlite_path(url: URL) -> Path | None:
    """The database file of an SQLite URL; None for an in-memory database."""
    if url.database in (None, "", ":memory:") or url.query.get("mode") == "memory":
        return None
    return Path(url.database)


def _prepare_sqlite_file(path: Path) -> None:
    """Create missing parent directories 0700 and the database file 0600."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    _enable_wal(path)


def _enable_wal(path: Path) -> None:
    """Put the database in WAL mode before any engine connects to it.

    Converting a database to WAL takes a brief exclusive lock, and SQLite does not wait for it
    under busy_timeout: daemons opening one new database at once failed with "database is
    locked". So the conversion happens here, retried until the busy timeout; on a database
    already in WAL mode (every open but the first) the pragma takes no lock and returns at once.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL").close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        conn.close()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
    cursor = dbapi_connection.cursor()
    for pragma in (
        f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
        "PRAGMA synchronous = NORMAL",
        "PRAGMA foreign_keys = ON",
    ):
        cursor.execute(pragma)
    cursor.close()


def _sqlite_engine(url: URL, begin: str) -> AsyncEngine:
    # Every use is an explicit BEGIN...COMMIT, so the pool need not roll back on check-in.
    engine = create_async_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000}, pool_reset_on_return=None
    )
    event.listen(engine.sync_engine, "connect", _on_sqlite_connect)

    def on_begin(conn: Any) -> None:
        conn.exec_driver_sql(begin)

    event.listen(engine.sync_engine, "begin", on_begin)
    return engine


def _retryable(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRY_SQLSTATES


def store_error(action: str, exc: SQLAlchemyError | OSError | sqlite3.Error) -> StoreError:
    """The StoreError for a database or driver error: one line, naming what we were doing."""
    if isinstance(exc, OSError):
        return StoreError(f"database I/O error while {action}: {exc}")
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return StoreError(f"database error while {action}: {detail}")


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Map database and driver errors to StoreError (the one boundary)."""
    try:
        yield
    except (SQLAlchemyError, OSError, sqlite3.Error) as exc:
        raise store_error(action, exc) from exc


class Database:
    """The engines of one database and its transaction helpers."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """`create=False` refuses to create a missing SQLite file (for read-only commands)."""
        self.url = parse_url(url)
        self.dialect = self.url.get_backend_name()
        self._write_lock = asyncio.Lock()
        if self.is_sqlite:
            path = sqlite_path(self.url)
            if path is not None and not create and not path.exists():
                raise StoreError(f"no database at {path}")
            if path is not None:
                with store_errors("opening the database file"):
                    _prepare_sqlite_file(path)
            self.write_engine = _sqlite_engine(self.url, "BEGIN IMMEDIATE")
            # An in-memory database exists once per connection: reads must share the writer's.
            self.read_engine = (
                self.write_engine if path is None else _sqlite_engine(self.url, "BEGIN")
            )
        else:
            # Pre-ping: a daemon's pooled connections outlive server restarts and failovers.
            engine = create_async_engine(self.url, pool_pre_ping=True)
            self.write_engine = engine
            # One snapshot for every statement of a read (READ COMMITTED gives one each);
            # read-only transactions never fail to serialize.
            self.read_engine = engine.execution_options(isolation_level="REPEATABLE READ")

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that supports ON CONFLICT (same API on both backends)."""
        if self.is_postgres:
            from sqlalchemy.dialects import postgresql  # only loaded when it is used

            return postgresql.insert(table)
        return sqlite.insert(table)

    async def write(self, work: Callable[[AsyncConnection], Awaitable[T]], action: str) -> T:
        """Run `work` in one write transaction; retry it on a transient conflict."""
        attempt = 0
        while True:
            try:
                async with self._serialized():
                    return await to_completion(_transaction(self.write_engine, work))
            except DBAPIError as exc:
                attempt += 1
                if not _retryable(exc) or attempt == _RETRIES:
                    raise store_error(action, exc) from exc
            except (SQLAlchemyError, OSError) as exc:
                raise store_error(action, exc) from exc
            await asyncio.sleep(0.01 * attempt)

    async def read(self, work: Callable[[AsyncConnection], Awaitable[T]], action: str) -> T:
        """Run `work` in one read transaction (one consistent snapshot)."""
        with store_errors(action):
            return await to_completion(_transaction(self.read_engine, work))

    @asynccontextmanager
    async def _serialized(self) -> AsyncIterator[None]:
        if not self.is_sqlite:
            yield
            return
        async with self._write_lock:
            yield

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        # PostgreSQL's read engine is a view of the write engine's pool: disposed with it.
        if self.is_sqlite and self.read_engine is not self.write_engine:
            await self.read_engine.dispose()


async def _transaction(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async with engine.begin() as conn:
        return await work(conn)


class Component:
    """Base of the store's verb classes: a database and a clock."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self._db = db
        self._clock = clock

    @property
    def clock(self) -> Clock:
        """The time the store records: a test's fake clock, the database server's time on
        PostgreSQL (`ServerClock`), else `time.time`."""
        return self._clock
