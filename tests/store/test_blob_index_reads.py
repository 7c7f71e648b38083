"""The engine's read-through view of the blob index: lookups made together share one query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mirrord.engine import StoreBlobIndex
from mirrord.errors import StoreError
from mirrord.store import BlobSource, Store
from tests.store.support import FakeClock

REG = "registry.example:5000"
DIGESTS = ["sha256:" + f"{n:x}" * 64 for n in range(1, 16)]


class CountingBlobs:
    """The store's blob index, counting the location queries that reach the database."""

    def __init__(self, store: Store) -> None:
        self._blobs = store.blobs
        self.clock = store.blobs.clock
        self.queries: list[list[str]] = []

    async def locations(self, registry: str, digests: list[str], **kwargs: Any) -> Any:
        self.queries.append(list(digests))
        return await self._blobs.locations(registry, digests, **kwargs)


async def test_lookups_made_together_share_one_query_and_are_answered_from_memory_after(
    store: Store,
) -> None:
    await store.blobs.record(REG, "team/base", DIGESTS[0], 1, BlobSource.UPLOAD)
    counting = CountingBlobs(store)
    index = StoreBlobIndex(counting)  # type: ignore[arg-type]

    known = await asyncio.gather(*(index.known_in_repo(REG, "team/app", d) for d in DIGESTS))
    assert known == [False] * len(DIGESTS)
    assert counting.queries == [DIGESTS]
    assert await index.mount_candidates(REG, DIGESTS[0], "team/app", 4) == ["team/base"]
    assert await index.known_in_repo(REG, "team/base", DIGESTS[0])
    assert len(counting.queries) == 1  # the rest came from memory


async def test_a_failed_read_leaves_its_blobs_unknown_and_the_next_lookup_tries_again(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await store.blobs.record(REG, "r", DIGESTS[0], 1, BlobSource.UPLOAD)
    index = StoreBlobIndex(store.blobs)

    async def broken(*_: Any, **__: Any) -> Any:
        raise StoreError("database error while finding blob locations: disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(store.blobs, "locations", broken)
        known = await asyncio.gather(*(index.known_in_repo(REG, "r", d) for d in DIGESTS[:3]))
    assert known == [False, False, False]  # unknown: the blob service HEADs them
    assert "reading the blob index failed" in caplog.text
    assert await index.known_in_repo(REG, "r", DIGESTS[0])  # read again, now it works


async def test_a_location_older_than_the_ttl_counts_as_unknown_even_once_cached(
    store: Store, clock: FakeClock
) -> None:
    await store.blobs.record(REG, "team/base", DIGESTS[0], 1, BlobSource.UPLOAD)
    index = StoreBlobIndex(store.blobs, ttl=3600)
    assert await index.known_in_repo(REG, "team/base", DIGESTS[0])

    clock.advance(7200)  # the daemon has been running for two hours since
    assert not await index.known_in_repo(REG, "team/base", DIGESTS[0])
    assert await index.mount_candidates(REG, DIGESTS[0], "team/app", 4) == []
    await index.record(REG, "team/base", DIGESTS[0], 1, "head")  # a HEAD saw it again
    assert await index.known_in_repo(REG, "team/base", DIGESTS[0])
    await index.flush()
