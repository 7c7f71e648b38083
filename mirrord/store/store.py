"""`Store`: the database of one mirrord, opened (and migrated) as an async context manager."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from mirrord.store import migrate
from mirrord.store.blobs import BlobIndex
from mirrord.store.clock import ServerClock
from mirrord.store.db import Clock, Database, default_database_url
from mirrord.store.queue import Queue
from mirrord.store.tags import TagStates

log = logging.getLogger(__name__)

SKEW_WARNING = 10.0  # seconds between this machine's clock and the database server's


class Store:
    """The queue, the blob-location index and the tag state of one database."""

    def __init__(self, db: Database, clock: Clock = time.time) -> None:
        self.db = db
        self.clock = clock
        self.queue = Queue(db, clock)
        self.blobs = BlobIndex(db, clock)
        self.tags = TagStates(db, clock)

    @classmethod
    async def open(
        cls,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        local: Clock = time.time,
        upgrade: bool = True,
        create: bool = True,
    ) -> Store:
        """Open the database at `url` (default: `default_database_url()`) and, unless told
        otherwise, bring its schema up to date. `create=False` refuses a missing SQLite file
        (commands that only look at or change existing jobs).

        The store's clock is `clock` if given (a test's); else, on PostgreSQL, the server's
        time read through this machine's `local` clock (`ServerClock`: daemons sharing the
        database agree on leases and due times whatever their own clocks say); else `local`."""
        db = Database(url or default_database_url(), create=create)
        try:
            if upgrade:
                await migrate.upgrade(db)
            if clock is None:
                clock = await _default_clock(db, local)
        except BaseException:
            await db.dispose()
            raise
        return cls(db, clock)

    async def sync_clock(self) -> None:
        """Measure the database server's clock again (a no-op unless it is the store's)."""
        if isinstance(self.clock, ServerClock):
            await self.clock.sync(self.db)

    async def close(self) -> None:
        await self.db.dispose()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Store {self.db.url.render_as_string(hide_password=True)}>"


async def _default_clock(db: Database, local: Clock) -> Clock:
    if not db.is_postgres:
        return local  # SQLite: one machine, one clock
    server = ServerClock(local)
    await server.sync(db)
    if abs(server.offset) > SKEW_WARNING:
        log.warning(
            "this machine's clock is %+.0f s off the database server's: mirrord's leases and "
            "due times follow the server's, but check NTP",
            -server.offset,
        )
    return server
