"""The transfer engine every entry point runs on: the daemon, `sync --once`, skopeo-style `sync`.

It owns what copy jobs share: the registry clients (one connection pool per registry and role,
with its rate limit and Retry-After gate), the blob-location index and the single flights, and
the global limit on blob streams. A job hands it a CopyRequest; it returns a CopyResult.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from mirrord.blobs import INDEX_TTL, BlobService
from mirrord.model import CopyRequest
from mirrord.plan import RepoSelection, copies_for
from mirrord.registry.events import NULL_OBSERVER, Observer
from mirrord.store import BlobIndex as StoreBlobs
from mirrord.store import BlobSource, Store
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.base import BlobOutcome
from mirrord.transports.docker import ClientPool, OptionsFor, RegistryDestination, RegistrySource

log = logging.getLogger(__name__)


class StoreBlobIndex:
    """The persistent blob-location index, seen through the interface `BlobService` needs."""

    def __init__(self, blobs: StoreBlobs, ttl: float = INDEX_TTL) -> None:
        self._blobs = blobs
        self._ttl = ttl

    async def known_in_repo(self, registry: str, repo: str, digest: str) -> bool:
        return await self._blobs.known_in_repo(registry, repo, digest, self._ttl) is not None

    async def mount_candidates(
        self, registry: str, digest: str, exclude_repo: str, limit: int
    ) -> list[str]:
        found = await self._blobs.mount_candidates(registry, digest, exclude_repo, limit, self._ttl)
        return [location.repo for location in found]

    async def record(self, registry: str, repo: str, digest: str, size: int, source: str) -> None:
        await self._blobs.record(registry, repo, digest, size, BlobSource(source))

    async def invalidate(self, registry: str, repo: str, digest: str) -> None:
        await self._blobs.invalidate(registry, repo, digest)


@dataclass(frozen=True, slots=True)
class EngineLimits:
    blobs: int = 16  # blob streams at once, all jobs together


# Called after every blob decision (for metrics and progress).
BlobListener = Callable[[str, str, BlobOutcome, int], None]  # (src host, dst host, outcome, size)


class Engine:
    """Runs copy requests. Create one per process; `close()` it at the end."""

    def __init__(
        self,
        store: Store,
        options_for: OptionsFor,
        limits: EngineLimits = EngineLimits(),
        observer: Observer = NULL_OBSERVER,
    ) -> None:
        self.store = store
        self.observer = observer
        self.pool = ClientPool(options_for, observer)
        self.blobs = BlobService(
            StoreBlobIndex(store.blobs), asyncio.Semaphore(limits.blobs), observer
        )
        self._retired: list[ClientPool] = []

    def reconfigure(self, options_for: OptionsFor) -> None:
        """New registry settings for jobs started from now on (running ones keep theirs)."""
        self._retired.append(self.pool)
        self.pool = ClientPool(options_for, self.observer)

    async def close(self) -> None:
        for pool in (*self._retired, self.pool):
            await pool.close()

    async def copy(self, request: CopyRequest) -> CopyResult:
        dst = request.destination
        if request.immutable and dst.tag and await self._already_copied(request):
            return CopyResult(
                digest="",
                source_digest="",
                skipped=True,
                bytes=0,
                blobs={},
                manifests_pushed=0,
                duration=0.0,
                note="immutable tag already mirrored",
            )
        source = RegistrySource(
            self.pool.source(request.source.registry), request.source.repository
        )
        destination = RegistryDestination(
            self.pool.destination(dst.registry), dst.repository, self.blobs
        )
        return await copy_image(
            source,
            request.source.reference,
            destination,
            dst.digest or dst.tag,
            request.platforms,
            on_bytes=self._counter(request),
            on_blob=lambda desc, outcome: self.observer.blob_placed(outcome.value),
        )

    def _counter(self, request: CopyRequest) -> Callable[[int], None]:
        src, dst = request.source.registry, request.destination.registry

        def count(n: int) -> None:
            self.observer.transferred(src, "read", n)
            self.observer.transferred(dst, "write", n)

        return count

    async def _already_copied(self, request: CopyRequest) -> bool:
        dst = request.destination
        assert dst.tag is not None
        state = await self.store.tags.get(dst.registry, dst.repository, dst.tag)
        return state is not None and state.source_ref == str(request.source)

    async def list_and_plan(self, selection: RepoSelection) -> tuple[CopyRequest, ...]:
        """List a selection's repository and return the copies it selects."""
        client = self.pool.source(selection.source.registry)
        tags = await client.list_tags(selection.source.repository)
        return copies_for(selection, tags)
