"""The engine's read-through view of the blob index: lookups made together share one query."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mirrord.engine import StoreBlobIndex
from mirrord.errors import StoreError
from mirrord.store import BlobSource, Store

REG = "registry.example:5000"
DIGESTS = ["sha256:" + f"{n:x}" * 64 for n in range(1, 16)]


class CountingBlobs:
    """The store's blob index, counting the location queries that reach the database."""

    def __init__(self, store: Store) -> None:
        self._blobs = store.blobs
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


async def test_a_failed_lookup_reaches_every_waiter_and_the_next_lookup_tries_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = StoreBlobIndex(store.blobs)

    async def broken(*_: Any, **__: Any) -> Any:
        raise StoreError("database error while finding blob locations: disk I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(store.blobs, "locations", broken)
        results = await asyncio.gather(
            *(index.known_in_repo(REG, "r", d) for d in DIGESTS[:3]), return_exceptions=True
        )
    assert all(isinstance(r, StoreError) for r in results)
    assert not await index.known_in_repo(REG, "r", DIGESTS[0])
