"""The blob-location index: skip with zero requests, rank mount sources, forget bad ones."""

from __future__ import annotations

import pytest

from mirrord.store import BlobLocation, BlobRecord, BlobSource, BlobState, Store
from mirrord.store.blobs import rank_candidates, shared_leading_components
from tests.store.support import FakeClock

REG = "registry.example:5000"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


async def test_a_recorded_blob_is_known_in_its_repo_until_it_is_too_old(
    store: Store, clock: FakeClock
) -> None:
    blobs = store.blobs
    await blobs.record(REG, "team/app", D1, 1234, BlobSource.UPLOAD)
    found = await blobs.known_in_repo(REG, "team/app", D1, max_age=3600)
    assert found is not None
    assert (found.size, found.state, found.source) == (1234, BlobState.PRESENT, BlobSource.UPLOAD)
    assert await blobs.known_in_repo(REG, "team/other", D1) is None
    clock.advance(3601)
    assert await blobs.known_in_repo(REG, "team/app", D1, max_age=3600) is None
    assert await blobs.known_in_repo(REG, "team/app", D1) is not None


async def test_a_head_does_not_downgrade_a_blob_a_manifest_references(store: Store) -> None:
    blobs = store.blobs
    await blobs.record(REG, "a", D1, 10, BlobSource.MANIFEST_PUT, BlobState.REFERENCED)
    await blobs.record(REG, "a", D1, None, BlobSource.HEAD)
    found = await blobs.known_in_repo(REG, "a", D1)
    assert found is not None
    assert (found.state, found.source, found.size) == (BlobState.REFERENCED, BlobSource.HEAD, 10)


async def test_mount_candidates_follow_the_protocol_order(store: Store, clock: FakeClock) -> None:
    blobs = store.blobs
    await blobs.record(REG, "other/x", D1, 1, BlobSource.UPLOAD)
    clock.advance(10)
    await blobs.record(REG, "team/a/old", D1, 1, BlobSource.UPLOAD)
    clock.advance(10)
    await blobs.record(REG, "team/b", D1, 1, BlobSource.MOUNT)
    await blobs.record(REG, "zzz", D1, 1, BlobSource.MANIFEST_PUT, BlobState.REFERENCED)
    await blobs.record(REG, "team/a/target", D1, 1, BlobSource.UPLOAD)  # the target itself
    await blobs.record("elsewhere.example", "team/a/x", D1, 1, BlobSource.UPLOAD)
    await blobs.record(REG, "team/a/y", D2, 1, BlobSource.UPLOAD)

    found = await blobs.mount_candidates(REG, D1, exclude_repo="team/a/target", limit=10)

    assert [c.repo for c in found] == ["zzz", "team/a/old", "team/b", "other/x"]
    assert [c.repo for c in await blobs.mount_candidates(REG, D1, "team/a/target", 2)] == [
        "zzz",
        "team/a/old",
    ]


async def test_failed_mounts_push_a_location_down_then_out(store: Store) -> None:
    blobs = store.blobs
    await blobs.record(REG, "a", D1, 1, BlobSource.UPLOAD)
    await blobs.record(REG, "b", D1, 1, BlobSource.UPLOAD)
    await blobs.mark_failed(REG, "a", D1)
    assert [c.repo for c in await blobs.mount_candidates(REG, D1, "t")] == ["b", "a"]
    await blobs.mark_failed(REG, "a", D1)
    await blobs.mark_failed(REG, "a", D1)
    assert [c.repo for c in await blobs.mount_candidates(REG, D1, "t")] == ["b"]
    assert await blobs.known_in_repo(REG, "a", D1) is None  # suspect: not trusted for skip
    await blobs.record(REG, "a", D1, 1, BlobSource.HEAD)  # seen again: trusted again
    found = await blobs.known_in_repo(REG, "a", D1)
    assert found is not None
    assert (found.state, found.fail_count) == (BlobState.PRESENT, 0)


async def test_invalidate_and_forget_repo(store: Store) -> None:
    blobs = store.blobs
    await blobs.record_many(
        BlobRecord(REG, repo, digest, 1, BlobSource.MANIFEST_PUT, BlobState.REFERENCED)
        for repo in ("a", "b")
        for digest in (D1, D2)
    )
    assert await blobs.invalidate(REG, "a", D1)
    assert not await blobs.invalidate(REG, "a", D1)
    assert await blobs.forget_repo(REG, "b", [D2]) == 1
    assert await blobs.known_in_repo(REG, "b", D1) is not None
    assert await blobs.forget_repo(REG, "b") == 1
    assert await blobs.known_in_repo(REG, "a", D2) is not None


async def test_record_many_writes_each_location_once_keeping_the_strongest_state(
    store: Store,
) -> None:
    written = await store.blobs.record_many(
        [
            BlobRecord(REG, "a", D1, 5, BlobSource.MANIFEST_PUT, BlobState.REFERENCED),
            BlobRecord(REG, "a", D1, 5, BlobSource.HEAD),
            BlobRecord(REG, "a", D2, 7, BlobSource.UPLOAD),
        ]
    )
    assert written == 2
    found = await store.blobs.known_in_repo(REG, "a", D1)
    assert found is not None
    assert found.state is BlobState.REFERENCED
    assert await store.blobs.record_many([]) == 0


def test_likeness_counts_shared_leading_components() -> None:
    assert shared_leading_components("team/a/x", "team/a/y") == 2
    assert shared_leading_components("team/a", "team/ab") == 1
    assert shared_leading_components("x", "y") == 0


def test_ranking_breaks_ties_by_recency_then_failures() -> None:
    def loc(repo: str, verified_at: float, fail_count: int) -> BlobLocation:
        return BlobLocation(
            REG, repo, D1, 1, BlobState.PRESENT, BlobSource.UPLOAD, verified_at, fail_count
        )

    ranked = rank_candidates([loc("p/a", 1, 0), loc("p/b", 2, 1), loc("p/c", 2, 0)], "q")
    assert [c.repo for c in ranked] == ["p/c", "p/b", "p/a"]


async def test_locations_of_many_digests_in_one_query(
    store: Store, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = store.blobs
    d3 = "sha256:" + "3" * 64
    await blobs.record(REG, "old", D2, 1, BlobSource.UPLOAD)
    clock.advance(3601)
    for repo in ("a", "b", "c"):
        await blobs.record(REG, repo, D1, 1, BlobSource.UPLOAD)
    await blobs.record(REG, "b", D2, 1, BlobSource.UPLOAD)
    await blobs.record("elsewhere:5000", "a", d3, 1, BlobSource.UPLOAD)
    for _ in range(3):
        await blobs.mark_failed(REG, "c", D1)  # suspect: left out

    found = await blobs.locations(REG, [D1, D2, d3], max_age=3600)
    assert sorted((loc.digest, loc.repo) for loc in found) == [(D1, "a"), (D1, "b"), (D2, "b")]
    everything = await blobs.locations(REG, [D2])
    assert sorted(loc.repo for loc in everything) == ["b", "old"]

    monkeypatch.setattr("mirrord.store.blobs.CANDIDATE_ROWS", 1)  # a digest in many repos
    capped = await blobs.locations(REG, [D1, D2])
    assert sorted(loc.digest for loc in capped) == [D1, D2]
