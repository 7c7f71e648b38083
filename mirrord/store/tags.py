"""What mirrord last wrote to each destination tag, for the opt-in immutable-tag skip."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Component, Database
from mirrord.store.models import tag_state
from mirrord.store.records import TagState, TagUpdate

T = tag_state.c


def upsert_tags(
    conn: AsyncConnection, db: Database, updates: Sequence[TagUpdate], now: float
) -> Any:
    """Write tag state rows (one statement per kind of update); returns an awaitable."""
    return _upsert(conn, db, updates, now)


async def _upsert(
    conn: AsyncConnection, db: Database, updates: Sequence[TagUpdate], now: float
) -> None:
    for copied in (True, False):
        rows = [_tag_row(u, now) for u in updates if u.copied is copied]
        if not rows:
            continue
        statement = db.insert(tag_state)
        changes: dict[str, Any] = {name: statement.excluded[name] for name in rows[0]}
        if not copied:
            del changes["copied_at"]
        statement = statement.on_conflict_do_update(
            index_elements=[T.registry, T.repo, T.tag], set_=changes
        )
        await conn.execute(statement, rows)


def _tag_row(update: TagUpdate, now: float) -> dict[str, Any]:
    return {
        "registry": update.registry,
        "repo": update.repo,
        "tag": update.tag,
        "digest": update.digest,
        "source_ref": update.source_ref,
        "source_name": update.source_name,
        "copied_at": now,
        "checked_at": now,
    }


class TagStates(Component):
    async def record(
        self,
        registry: str,
        repo: str,
        tag: str,
        digest: str,
        *,
        source_ref: str,
        source_name: str = "",
        copied: bool = True,
    ) -> None:
        """Remember that `registry/repo:tag` holds `digest`. `copied=False` records a check that
        found the tag up to date: the time of the last copy is kept."""
        now = self._clock()
        row = {
            "registry": registry,
            "repo": repo,
            "tag": tag,
            "digest": digest,
            "source_ref": source_ref,
            "source_name": source_name,
            "copied_at": now,
            "checked_at": now,
        }
        statement = self._db.insert(tag_state).values(row)
        changes: dict[str, Any] = {name: statement.excluded[name] for name in row}
        if not copied:
            del changes["copied_at"]
        statement = statement.on_conflict_do_update(
            index_elements=[T.registry, T.repo, T.tag], set_=changes
        )

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement)

        await self._db.write(work, "recording a tag")

    async def get(self, registry: str, repo: str, tag: str) -> TagState | None:
        statement = select(tag_state).where(T.registry == registry, T.repo == repo, T.tag == tag)

        async def work(conn: AsyncConnection) -> TagState | None:
            row = (await conn.execute(statement)).mappings().first()
            return None if row is None else TagState(**row)

        return await self._db.read(work, "reading a tag")

    async def forget(self, registry: str, repo: str, tag: str) -> bool:
        statement = delete(tag_state).where(T.registry == registry, T.repo == repo, T.tag == tag)

        async def work(conn: AsyncConnection) -> bool:
            return bool((await conn.execute(statement)).rowcount)

        return await self._db.write(work, "forgetting a tag")
