"""`ServerClock`: the database server's time, read on this machine without a query.

Daemons that share a PostgreSQL database compare times each of them wrote: a lease's end, a
retry's due time. On their own clocks, a daemon running more than a lease (60 s) ahead of
another took that one's running jobs back. So on PostgreSQL the store's clock is this
machine's, shifted by its measured offset from the server's.
"""

from __future__ import annotations

import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Clock, Database

_SERVER_NOW = text("SELECT extract(epoch FROM clock_timestamp())")


class ServerClock:
    """`local()` plus the offset measured by the last `sync` (0 until the first)."""

    def __init__(self, local: Clock = time.time) -> None:
        self._local = local
        self.offset = 0.0

    def __call__(self) -> float:
        return self._local() + self.offset

    async def sync(self, db: Database) -> None:
        """Measure the offset again (at open, then before every reap: a local clock stepped
        by NTP is followed within a reap interval)."""
        self.offset = await db.read(self._measure, "reading the database server's clock")

    async def _measure(self, conn: AsyncConnection) -> float:
        # The server read its clock between `before` and `after`: take the middle.
        before = self._local()
        server = (await conn.execute(_SERVER_NOW)).scalar_one()
        after = self._local()
        return float(server) - (before + after) / 2

    def __repr__(self) -> str:
        return f"<ServerClock offset={self.offset:+.3f}s>"
