"""The blob-location index (protocol.md §4.2): where each blob is known to exist, so a copy can
skip a blob with zero requests or mount it from a sibling repository instead of uploading it.

Only observations the registry confirmed are recorded: HEAD 200, upload 201 (after
verification), mount 201, an accepted manifest PUT (its blobs become `REFERENCED`), source GETs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mirrord.store.db import Component
from mirrord.store.models import blob_locations
from mirrord.store.records import BlobLocation, BlobRecord, BlobSource, BlobState

B = blob_locations.c
SUSPECT_AFTER = 3  # failed mounts from a location before it is no longer offered
CANDIDATE_ROWS = 500  # rows read to rank mount candidates; the rest are never tried anyway
PRESENT, REFERENCED, SUSPECT = (int(s) for s in BlobState)


def shared_leading_components(a: str, b: str) -> int:
    """How many leading path components two repository names share (moby's "likeness")."""
    count = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        count += 1
    return count


def rank_candidates(locations: Iterable[BlobLocation], target_repo: str) -> list[BlobLocation]:
    """Mount candidates best first: referenced by a manifest (required on ECR), then most path
    components in common with the target repo, then newest verified, then fewest failures."""
    return sorted(
        locations,
        key=lambda loc: (
            loc.state is not BlobState.REFERENCED,
            -shared_leading_components(loc.repo, target_repo),
            -loc.verified_at,
            loc.fail_count,
        ),
    )


def _merge(records: Iterable[BlobRecord]) -> list[BlobRecord]:
    """One record per location (an upsert may touch each row once): the strongest state wins."""
    merged: dict[tuple[str, str, str], BlobRecord] = {}
    for record in records:
        key = (record.registry, record.repo, record.digest)
        previous = merged.get(key)
        if previous is None or _strength(record.state) >= _strength(previous.state):
            merged[key] = record
    return list(merged.values())


def _strength(state: BlobState) -> int:
    return {BlobState.SUSPECT: 0, BlobState.PRESENT: 1, BlobState.REFERENCED: 2}[state]


def _location(registry: str, repo: str, digest: str) -> ColumnElement[bool]:
    return and_(B.registry == registry, B.repo == repo, B.digest == digest)


class BlobIndex(Component):
    async def record(
        self,
        registry: str,
        repo: str,
        digest: str,
        size: int | None,
        source: BlobSource,
        state: BlobState = BlobState.PRESENT,
    ) -> None:
        await self.record_many([BlobRecord(registry, repo, digest, size, source, state)])

    async def record_many(self, records: Iterable[BlobRecord]) -> int:
        """Record observations in one transaction; returns how many locations were written.
        A plain presence never downgrades a location already known to be referenced."""
        now = self._clock()
        rows = [_row(record, now) for record in _merge(records)]
        if not rows:
            return 0
        insert = self._db.insert(blob_locations)
        new = insert.excluded
        keep_referenced = (new.state == PRESENT) & (B.state == REFERENCED)
        statement = insert.on_conflict_do_update(
            index_elements=[B.registry, B.repo, B.digest],
            set_={
                "size": func.coalesce(new.size, B.size),
                "state": case((keep_referenced, B.state), else_=new.state),
                "source": new.source,
                "verified_at": new.verified_at,
                "fail_count": 0,
            },
        )

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(statement, rows)

        await self._db.write(work, "recording blob locations")
        return len(rows)

    async def known_in_repo(
        self, registry: str, repo: str, digest: str, max_age: float | None = None
    ) -> BlobLocation | None:
        """The location if the blob is known present in this repo (verified within `max_age`)."""
        statement = select(blob_locations).where(
            _location(registry, repo, digest), B.state != SUSPECT
        )
        if max_age is not None:
            statement = statement.where(B.verified_at >= self._clock() - max_age)
        return await self._db.read(lambda conn: _first(conn, statement), "looking up a blob")

    async def locations(
        self, registry: str, digests: Iterable[str], max_age: float | None = None
    ) -> list[BlobLocation]:
        """Every repository of `registry` known to hold each of `digests` (suspect ones left
        out), in one query; at most CANDIDATE_ROWS per digest."""
        conditions = [B.registry == registry, B.digest.in_(list(digests)), B.state != SUSPECT]
        if max_age is not None:
            conditions.append(B.verified_at >= self._clock() - max_age)
        number = func.row_number().over(partition_by=B.digest).label("number")
        ranked = select(blob_locations, number).where(*conditions).subquery()
        statement = select(*(ranked.c[c.name] for c in B)).where(ranked.c.number <= CANDIDATE_ROWS)

        async def work(conn: AsyncConnection) -> list[BlobLocation]:
            rows = (await conn.execute(statement)).mappings()
            return [BlobLocation.from_row(row) for row in rows]

        return await self._db.read(work, "finding blob locations")

    async def mount_candidates(
        self,
        registry: str,
        digest: str,
        exclude_repo: str,
        limit: int = 4,
        max_age: float | None = None,
    ) -> list[BlobLocation]:
        """Other repos of `registry` holding `digest`, best mount source first (see
        `rank_candidates`); suspect locations are left out."""
        statement = (
            select(blob_locations)
            .where(B.registry == registry, B.digest == digest, B.repo != exclude_repo)
            .where(B.state != SUSPECT)
            .order_by((B.state == REFERENCED).desc(), B.verified_at.desc())
            .limit(CANDIDATE_ROWS)
        )
        if max_age is not None:
            statement = statement.where(B.verified_at >= self._clock() - max_age)

        async def work(conn: AsyncConnection) -> list[BlobLocation]:
            rows = (await conn.execute(statement)).mappings()
            return [BlobLocation.from_row(row) for row in rows]

        found = await self._db.read(work, "finding mount candidates")
        return rank_candidates(found, exclude_repo)[:limit]

    async def invalidate(self, registry: str, repo: str, digest: str) -> bool:
        """Forget one location (a HEAD answered 404 where we expected the blob)."""
        statement = delete(blob_locations).where(_location(registry, repo, digest))
        return bool(await self._rowcount(statement, "invalidating a blob location"))

    async def mark_failed(self, registry: str, repo: str, digest: str) -> None:
        """A mount from this location failed: count it; after SUSPECT_AFTER it is not offered."""
        failures = B.fail_count + 1
        statement = (
            update(blob_locations)
            .where(_location(registry, repo, digest))
            .values(
                fail_count=failures,
                state=case((failures >= SUSPECT_AFTER, SUSPECT), else_=B.state),
            )
        )
        await self._rowcount(statement, "counting a failed mount")

    async def forget_repo(
        self, registry: str, repo: str, digests: Iterable[str] | None = None
    ) -> int:
        """Forget a repo's locations, or only `digests` (after MANIFEST_BLOB_UNKNOWN)."""
        statement = delete(blob_locations).where(B.registry == registry, B.repo == repo)
        if digests is not None:
            statement = statement.where(B.digest.in_(list(digests)))
        return await self._rowcount(statement, "forgetting blob locations")

    async def _rowcount(self, statement: Any, action: str) -> int:
        async def work(conn: AsyncConnection) -> int:
            return int((await conn.execute(statement)).rowcount)

        return await self._db.write(work, action)


def _row(record: BlobRecord, now: float) -> dict[str, Any]:
    return {
        "registry": record.registry,
        "repo": record.repo,
        "digest": record.digest,
        "size": record.size,
        "state": int(record.state),
        "source": record.source.value,
        "verified_at": now,
        "fail_count": 0,
    }


async def _first(conn: AsyncConnection, statement: Any) -> BlobLocation | None:
    row = (await conn.execute(statement)).mappings().first()
    return None if row is None else BlobLocation.from_row(row)
