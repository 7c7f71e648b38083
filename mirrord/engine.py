"""The transfer engine every entry point runs on: the daemon, `sync --once`, skopeo-style `sync`.

It owns what copy jobs share: the registry clients (one connection pool per registry and role,
with its rate limit and Retry-After gate), the blob-location index and the single flights, and
the global limit on blob streams. A job hands it a CopyRequest; it returns a CopyResult.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from mirrord.blobs import INDEX_TTL, BlobService
from mirrord.config.daemon import MirrorConfig
from mirrord.model import CopyRequest
from mirrord.plan import RepoSelection, copies_for
from mirrord.registry.events import NULL_OBSERVER, Observer
from mirrord.registry.options import RegistryOptions
from mirrord.store import BlobIndex as StoreBlobs
from mirrord.store import BlobLocation, BlobRecord, BlobSource, BlobState, Store
from mirrord.store.blobs import rank_candidates
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.base import BlobOutcome
from mirrord.transports.docker import ClientPool, OptionsFor, RegistryDestination, RegistrySource

log = logging.getLogger(__name__)


class StoreBlobIndex:
    """The persistent blob-location index as `BlobService` sees it: read through, write behind.

    The first question about a digest loads every location of it on that registry; later
    questions are answered from memory, and an entry older than the TTL counts as unknown (a
    HEAD or a mount checks it again). A failed read leaves its digests unknown until the next
    question: those blobs are decided by HEAD, not failed. The digests asked about while a
    load runs (every job starting its blobs at once) are loaded together by the next query, so
    one lookup at a time reaches the database and a burst of lookups waits for one or two
    queries, not for a connection each. New locations are written in batches in the
    background (the index is a hint: losing the last few in a crash costs a HEAD or an upload,
    never correctness). A copy of a few hundred blobs then costs a few queries, not thousands.
    """

    FLUSH_EVERY = 0.2
    MAX_CACHED = 200_000  # digests; past that the cache starts over (memory stays bounded)
    LOAD_BATCH = 200  # digests per query

    def __init__(self, blobs: StoreBlobs, ttl: float = INDEX_TTL) -> None:
        self._blobs = blobs
        self._ttl = ttl
        self._clock = blobs.clock
        self._known: dict[tuple[str, str], dict[str, BlobLocation]] = {}
        self._loading: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._wanted: dict[str, list[str]] = {}  # registry -> digests not yet asked for
        self._loader: asyncio.Task[None] | None = None
        self._pending: list[BlobRecord] = []
        self._writer: asyncio.Task[None] | None = None

    async def _locations(self, registry: str, digest: str) -> dict[str, BlobLocation]:
        """The fresh locations of `digest` on `registry` (entries older than the TTL are left
        out: a long-running daemon checks those again with a HEAD or a mount)."""
        key = (registry, digest)
        if key not in self._known:
            if len(self._known) > self.MAX_CACHED:
                self._known.clear()
            await asyncio.shield(self._loading.get(key) or self._want(key))
        known = self._known.get(key, {})
        oldest = self._clock() - self._ttl
        return {repo: loc for repo, loc in known.items() if loc.verified_at >= oldest}

    def _want(self, key: tuple[str, str]) -> asyncio.Future[None]:
        loaded = self._loading[key] = asyncio.get_running_loop().create_future()
        self._wanted.setdefault(key[0], []).append(key[1])
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_wanted(), name="blob-index-load")
        return loaded

    async def _load_wanted(self) -> None:
        try:
            await asyncio.sleep(0)  # the other jobs starting now ask too: one query for all
            while self._wanted:
                registry, digests = next(iter(self._wanted.items()))
                batch, rest = digests[: self.LOAD_BATCH], digests[self.LOAD_BATCH :]
                if rest:
                    self._wanted[registry] = rest
                else:
                    del self._wanted[registry]
                await self._load(registry, batch)
        finally:  # (on cancellation, at shutdown) lookups left unloaded must not wait forever
            for loaded in self._loading.values():
                loaded.cancel()
            self._loading.clear()
            self._wanted.clear()

    async def _load(self, registry: str, digests: list[str]) -> None:
        keys = [(registry, digest) for digest in digests]
        try:
            found = await self._blobs.locations(registry, digests, max_age=self._ttl)
        except Exception as exc:  # a hint missing, not data: these blobs are decided by HEAD
            log.warning("reading the blob index failed, checking the registry instead: %s", exc)
            for key in keys:
                self._loading.pop(key).set_result(None)
            return
        for key in keys:
            self._known.setdefault(key, {})
        for loc in found:
            self._known[(registry, loc.digest)][loc.repo] = loc
        for key in keys:
            self._loading.pop(key).set_result(None)

    async def known_in_repo(self, registry: str, repo: str, digest: str) -> bool:
        return repo in await self._locations(registry, digest)

    async def mount_candidates(
        self, registry: str, digest: str, exclude_repo: str, limit: int
    ) -> list[str]:
        found = await self._locations(registry, digest)
        others = [loc for repo, loc in found.items() if repo != exclude_repo]
        return [loc.repo for loc in rank_candidates(others, exclude_repo)[:limit]]

    async def record(self, registry: str, repo: str, digest: str, size: int, source: str) -> None:
        kind = BlobSource(source)
        # Blobs of a manifest the registry accepted are referenced: some registries (ECR) mount
        # only those, so mount candidates rank them first.
        state = BlobState.REFERENCED if kind is BlobSource.MANIFEST_PUT else BlobState.PRESENT
        location = BlobLocation(registry, repo, digest, size, state, kind, self._clock())
        self._known.setdefault((registry, digest), {})[repo] = location
        self._pending.append(BlobRecord(registry, repo, digest, size, kind, state))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_behind(), name="blob-index")

    async def _write_behind(self) -> None:
        while self._pending:
            await asyncio.sleep(self.FLUSH_EVERY)
            batch, self._pending = self._pending, []
            try:
                await self._blobs.record_many(batch)
            except Exception as exc:  # a hint lost, not data: log and go on
                log.warning("recording %d blob location(s) failed: %s", len(batch), exc)

    async def invalidate(self, registry: str, repo: str, digest: str) -> None:
        self._known.get((registry, digest), {}).pop(repo, None)
        await self._blobs.invalidate(registry, repo, digest)

    async def close(self) -> None:
        """At shutdown: stop loading (no job waits for it any more: a drain cancelled them),
        then write what is pending, before the store closes."""
        if self._loader is not None:
            self._loader.cancel()
            await asyncio.gather(self._loader, return_exceptions=True)
        await self.flush()

    async def flush(self) -> None:
        """Write what is pending now."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)


@dataclass(frozen=True, slots=True)
class EngineLimits:
    blobs: int = 16  # blob streams at once, all jobs together
    # A registry's pause (Retry-After, pull quota) longer than this defers the job to the queue
    # instead of holding its slot (jobs for other registries go on meanwhile).
    defer_after: float = 30.0


def engine_limits(config: MirrorConfig) -> EngineLimits:
    limits = config.limits
    return EngineLimits(limits.blobs, limits.defer_after.total_seconds())


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
        self._defer_after = limits.defer_after
        self.pool = ClientPool(self._deferring(options_for), observer)
        self.index = StoreBlobIndex(store.blobs)
        self.blobs = BlobService(self.index, asyncio.Semaphore(limits.blobs), observer)
        self._users: dict[ClientPool, int] = {}  # pool -> jobs running with it
        self._retired: set[ClientPool] = set()  # replaced by a reload, still in use
        self._closing: set[asyncio.Task[None]] = set()

    def reconfigure(self, options_for: OptionsFor, limits: EngineLimits) -> None:
        """New registry settings for jobs started from now on (running ones keep theirs; the
        old pool's connections close when its last job ends). `limits.blobs` is kept: the
        streams in flight hold the old count."""
        self._defer_after = limits.defer_after
        old, self.pool = self.pool, ClientPool(self._deferring(options_for), self.observer)
        if old in self._users:
            self._retired.add(old)
        else:
            self._close_soon(old)

    def _deferring(self, options_for: OptionsFor) -> OptionsFor:
        """The registry options of jobs: a long pause defers the job (see EngineLimits)."""

        def options(host: str, role: str) -> RegistryOptions:
            return replace(options_for(host, role), defer_after=self._defer_after)

        return options

    def _close_soon(self, pool: ClientPool) -> None:
        task = asyncio.create_task(pool.close(), name="close-retired-pool")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @contextlib.contextmanager
    def _job_pool(self) -> Iterator[ClientPool]:
        """The pool one job runs with, counted, so that a retired one is closed after it."""
        pool = self.pool
        self._users[pool] = self._users.get(pool, 0) + 1
        try:
            yield pool
        finally:
            self._users[pool] -= 1
            if not self._users[pool]:
                del self._users[pool]
                if pool in self._retired:
                    self._retired.discard(pool)
                    self._close_soon(pool)

    async def close(self) -> None:
        await self.index.close()
        await asyncio.gather(*self._closing)
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
        with self._job_pool() as pool:
            source = RegistrySource(pool.source(request.source.registry), request.source.repository)
            destination = RegistryDestination(
                pool.destination(dst.registry), dst.repository, self.blobs
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
        with self._job_pool() as pool:
            tags = await pool.source(selection.source.registry).list_tags(
                selection.source.repository
            )
        return copies_for(selection, tags)
