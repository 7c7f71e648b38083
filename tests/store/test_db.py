"""Engines and transactions: SQLite mechanics, atomic writes, one error type."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.errors import StoreError
from mirrord.store import JobState, Store
from mirrord.store.db import Database
from mirrord.store.models import runs
from tests.store.support import copy_jobs


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'a' / 'b' / 'mirrord.db'}")
    try:
        yield store
    finally:
        await store.close()


async def test_sqlite_directories_and_file_are_private(sqlite_store: Store, tmp_path: Path) -> None:
    for path in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b" / "mirrord.db").stat().st_mode) == 0o600


@pytest.mark.parametrize("engine", ["read", "write"])
async def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(
    sqlite_store: Store, engine: str
) -> None:
    pragmas = ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")

    async def work(conn: AsyncConnection) -> list[object]:
        return [(await conn.exec_driver_sql(f"PRAGMA {p}")).scalar() for p in pragmas]

    run = sqlite_store.db.read if engine == "read" else sqlite_store.db.write
    assert await run(work, "reading pragmas") == ["wal", 1, 30000, 1]  # 1: NORMAL


def _open_and_write_at_once(url: str, start: threading.Barrier) -> str:
    async def main() -> str:
        start.wait()
        db = Database(url)
        try:
            await db.write(lambda c: c.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (x)"), "w")
            return str(await db.read(lambda c: c.scalar(text("PRAGMA journal_mode")), "r"))
        finally:
            await db.dispose()

    return asyncio.run(main())


def test_many_openers_of_one_new_sqlite_database_all_succeed(tmp_path: Path) -> None:
    # Converting a new database to WAL takes an exclusive lock SQLite does not wait for under
    # busy_timeout; openers racing for it used to fail with "database is locked".
    openers = 4
    with ThreadPoolExecutor(openers) as pool:
        for n in range(30):
            url = f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}"
            start = threading.Barrier(openers)
            modes = pool.map(_open_and_write_at_once, [url] * openers, [start] * openers)
            assert list(modes) == ["wal"] * openers


async def test_sqlite_write_transactions_take_the_write_lock_at_begin(
    sqlite_store: Store, tmp_path: Path
) -> None:
    inside, release = asyncio.Event(), asyncio.Event()

    async def idle_writer(conn: AsyncConnection) -> None:
        inside.set()
        await release.wait()  # has not written anything yet

    writer = asyncio.create_task(sqlite_store.db.write(idle_writer, "holding the lock"))
    await inside.wait()
    other = sqlite3.connect(tmp_path / "a" / "b" / "mirrord.db", timeout=0)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
        release.set()
        await writer


async def test_sqlite_readers_keep_their_snapshot_and_never_block_writers(
    sqlite_store: Store,
) -> None:
    q = sqlite_store.queue
    await q.enqueue(copy_jobs(1))
    first_read, written = asyncio.Event(), asyncio.Event()

    async def reader(conn: AsyncConnection) -> tuple[int, int]:
        count = select(text("count(*)")).select_from(text("jobs"))
        before = (await conn.execute(count)).scalar_one()
        first_read.set()
        await written.wait()
        return before, (await conn.execute(count)).scalar_one()

    reading = asyncio.create_task(sqlite_store.db.read(reader, "reading"))
    await first_read.wait()
    await asyncio.wait_for(q.enqueue(copy_jobs(2, "more")), timeout=5)
    written.set()
    assert await reading == (1, 1)
    assert sum((await q.counts_by_state()).values()) == 3


async def test_an_in_memory_sqlite_database_works() -> None:
    store = await Store.open("sqlite+aiosqlite://")
    try:
        await store.queue.enqueue(copy_jobs(2))
        assert len(await store.queue.claim("w", limit=5)) == 2
        assert (await store.queue.counts_by_state())[JobState.RUNNING] == 2
    finally:
        await store.close()


async def test_a_failed_write_leaves_nothing_behind(store: Store) -> None:
    async def half_done(conn: AsyncConnection) -> None:
        await conn.execute(insert(runs).values(trigger="cli", status="running", started_at=1.0))
        await conn.execute(insert(runs).values(trigger="bogus", status="running", started_at=1.0))

    with pytest.raises(StoreError, match="while testing"):
        await store.db.write(half_done, "testing")
    assert await store.queue.runs() == []


async def test_database_errors_become_one_line_store_errors(store: Store) -> None:
    async def broken(conn: AsyncConnection) -> None:
        await conn.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(StoreError) as caught:
        await store.db.read(broken, "reading nonsense")
    assert "no_such_table" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert caught.value.transient


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/mirrord",
        "sqlite+pysqlite:///x.db",
        "::",
        "postgresql://u:pw@h:5432x/db",  # a ValueError out of SQLAlchemy: was a traceback
        "postgresql://u:pw@h:99999/db",  # an OverflowError in asyncpg at connect
    ],
)
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError) as caught:
        Database(url)
    assert "pw" not in str(caught.value)


def test_plain_scheme_urls_get_their_asyncio_driver(tmp_path: Path) -> None:
    assert Database(f"sqlite:///{tmp_path}/x.db").url.drivername == "sqlite+aiosqlite"
    assert Database("postgresql://u:secret@h/db").url.drivername == "postgresql+asyncpg"


def test_an_invalid_url_is_not_echoed() -> None:
    with pytest.raises(StoreError) as caught:
        Database("::secret-password@")
    assert "secret" not in str(caught.value)


async def test_an_unreachable_postgresql_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        await Store.open("postgresql+asyncpg://nobody@127.0.0.1:1/mirrord")


async def test_a_write_cancelled_half_way_leaves_no_lock_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a cancelled task does on its way out (the scheduler ending its run, a shutdown
    handing jobs back) is a write right after the one that was cancelled: it must not wait
    for a lock the cancelled transaction's connection still holds."""
    monkeypatch.setattr("mirrord.store.db.BUSY_TIMEOUT_MS", 2000)  # a leaked lock fails fast
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'cancel.db'}")

    async def add(conn: AsyncConnection) -> None:
        await conn.execute(text("INSERT INTO t VALUES (1)"))
        await conn.execute(text("SELECT count(*) FROM t"))
        await conn.execute(text("UPDATE t SET x = x + 1"))

    async def plan() -> None:
        try:
            for _ in range(4):
                await db.write(add, "planning")
        except asyncio.CancelledError:
            await db.write(add, "ending the run")  # StoreError: database is locked
            raise

    async def create(conn: AsyncConnection) -> None:
        await conn.execute(text("CREATE TABLE t (x INTEGER)"))

    await db.write(create, "creating")
    delays = random.Random(0)
    try:
        for _ in range(200):
            task = asyncio.create_task(plan())
            await asyncio.sleep(delays.random() * 0.004)  # somewhere inside a transaction
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        async with db.read_engine.connect() as conn:
            rows = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
        assert rows > 200  # every ending write went in, besides the planned ones
    finally:
        await db.dispose()
