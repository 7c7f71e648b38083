"""Blob placement for registry destinations: skip | mount | upload, one transfer per digest.

For each blob a destination repository needs, in order of cost:
1. the blob-location index says the repository has it: nothing to do (0 requests);
2. another repository of the same registry has it (index, or the source repo when source and
   destination are one registry): cross-repository mount, 1 request; a refused mount's 202
   upload session is reused (a session left unused, by the next candidate, a HEAD that finds
   the blob or a failed upload, is cancelled: no partial upload waits for the registry's purge);
3. HEAD the destination: present -> done;
4. stream GET -> PUT, verified while streaming.

A session still open when the job is cancelled (operator, timeout, shutdown) is cancelled too,
best effort and within seconds. A 401 on the streamed PUT (the token expired during a long
upload) cannot be answered by sending the body again: the upload starts over, with a new token,
a new session and the source read again, at most UPLOAD_TOKEN_RENEWALS times per blob.

Single flight per (destination registry, digest): while one job uploads a blob, every other job
that needs it waits, then mounts it from the uploader's repository. Shared layers are therefore
uploaded once per registry, however many jobs run at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from mirrord.errors import IntegrityError, MirrordError, UploadUnauthorized
from mirrord.manifests import Descriptor, Manifest
from mirrord.registry.client import RegistryClient, UploadSession
from mirrord.registry.events import NULL_OBSERVER, Observer
from mirrord.retry import BackoffPolicy, retry_delay
from mirrord.transports.base import BlobOutcome, ByteCounter, ImageSource

log = logging.getLogger(__name__)

INDEX_TTL = 24 * 3600.0
BLOB_RETRY = BackoffPolicy(base=1.0, cap=30.0, attempts=3)
UPLOAD_TOKEN_RENEWALS = 2  # uploads started over after a token refused mid-stream, per blob


class BlobIndex(Protocol):
    """Where blobs are known to be: (registry, repository, digest) -> seen/verified."""

    async def known_in_repo(self, registry: str, repo: str, digest: str) -> bool: ...

    async def mount_candidates(
        self, registry: str, digest: str, exclude_repo: str, limit: int
    ) -> list[str]: ...

    async def record(
        self, registry: str, repo: str, digest: str, size: int, source: str
    ) -> None: ...

    async def invalidate(self, registry: str, repo: str, digest: str) -> None: ...


@dataclass(slots=True)
class _Seen:
    size: int
    source: str
    at: float
    failures: int = 0


class MemoryBlobIndex:
    """A blob index that lives as long as the process (the CLI's `copy`)."""

    def __init__(self, ttl: float = INDEX_TTL) -> None:
        self.ttl = ttl
        self._rows: dict[tuple[str, str], dict[str, _Seen]] = {}

    async def known_in_repo(self, registry: str, repo: str, digest: str) -> bool:
        seen = self._rows.get((registry, digest), {}).get(repo)
        return seen is not None and time.time() - seen.at < self.ttl

    async def mount_candidates(
        self, registry: str, digest: str, exclude_repo: str, limit: int
    ) -> list[str]:
        repos = self._rows.get((registry, digest), {})
        ranked = sorted(
            (r for r in repos if r != exclude_repo),
            key=lambda r: (repos[r].failures, -_common_prefix(r, exclude_repo), -repos[r].at),
        )
        return ranked[:limit]

    async def record(self, registry: str, repo: str, digest: str, size: int, source: str) -> None:
        self._rows.setdefault((registry, digest), {})[repo] = _Seen(size, source, time.time())

    async def invalidate(self, registry: str, repo: str, digest: str) -> None:
        self._rows.get((registry, digest), {}).pop(repo, None)


def _common_prefix(a: str, b: str) -> int:
    count = 0
    for x, y in zip(a.split("/"), b.split("/"), strict=False):
        if x != y:
            break
        count += 1
    return count


def mount_budget(size: int) -> int:
    """How many mount candidates a blob is worth (moby's rule: small blobs are cheap to send)."""
    if size < 100_000:
        return 1
    return 2 if size < 10_000_000 else 3


class VerifiedStream:
    """Passes blob bytes through while checking size and digest; holds back the last chunk.

    The final chunk is released only after the whole stream matched its descriptor, so a
    corrupt source never completes an upload, even at a registry that does not verify.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], desc: Descriptor, counter: ByteCounter
    ) -> None:
        self._chunks = chunks
        self._desc = desc
        self._counter = counter
        self.error: IntegrityError | None = None

    def _fail(self, message: str) -> IntegrityError:
        self.error = IntegrityError(f"blob {self._desc.digest}: {message}")
        return self.error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        algorithm = self._desc.digest.split(":", 1)[0]
        hasher, size, held = hashlib.new(algorithm), 0, b""
        async for chunk in self._chunks:
            size += len(chunk)
            if size > self._desc.size:
                raise self._fail(f"source sent more than the {self._desc.size} bytes declared")
            hasher.update(chunk)
            if held:
                yield held
                self._counter(len(held))
            held = chunk
        if size != self._desc.size:
            raise self._fail(f"source sent {size} bytes, {self._desc.size} declared")
        if f"{algorithm}:{hasher.hexdigest()}" != self._desc.digest:
            raise self._fail(
                f"content digest is {algorithm}:{hasher.hexdigest()} (source is corrupt)"
            )
        if held:
            yield held
            self._counter(len(held))


class BlobService:
    """Shared by every job writing to registries: the index, the flights, the stream limit."""

    def __init__(
        self, index: BlobIndex, streams: asyncio.Semaphore, observer: Observer = NULL_OBSERVER
    ) -> None:
        self.index = index
        self.streams = streams
        self.observer = observer
        self._flights: dict[tuple[str, str], asyncio.Event] = {}

    async def referenced(self, host: str, repo: str, manifest: Manifest) -> None:
        """Record the blobs of a manifest `repo` accepted as referenced there."""
        for desc in manifest.blobs:
            if desc.distributable:
                await self.index.record(host, repo, desc.digest, desc.size, "manifest-put")

    async def ensure(
        self,
        client: RegistryClient,
        repo: str,
        desc: Descriptor,
        source: ImageSource,
        counter: ByteCounter,
    ) -> BlobOutcome:
        key = (client.host, desc.digest)
        while True:
            if await self.index.known_in_repo(client.host, repo, desc.digest):
                return BlobOutcome.SKIPPED_KNOWN
            flight = self._flights.get(key)
            if flight is None:
                break
            await flight.wait()
        self._flights[key] = asyncio.Event()
        try:
            return await self._place_with_retries(client, repo, desc, source, counter)
        finally:
            self._flights.pop(key).set()

    async def _place_with_retries(
        self,
        client: RegistryClient,
        repo: str,
        desc: Descriptor,
        source: ImageSource,
        counter: ByteCounter,
    ) -> BlobOutcome:
        """A failed upload starts over with a fresh session; a corrupt read is re-fetched once;
        a token refused mid-upload is renewed and the upload started over (not an attempt)."""
        attempt, integrity_failures, renewals = 1, 0, 0
        while True:
            try:
                return await self._place(client, repo, desc, source, counter)
            except UploadUnauthorized as exc:
                renewals += 1
                if renewals > UPLOAD_TOKEN_RENEWALS:
                    raise
                log.info("%s; uploading blob %s again with a new token", exc, desc.digest)
                continue
            except IntegrityError:
                origin = source.origin
                self.observer.digest_mismatch(origin.registry if origin else "local")
                integrity_failures += 1
                if integrity_failures > 1 or attempt == BLOB_RETRY.attempts:
                    raise
            except MirrordError as exc:
                if not exc.transient or attempt == BLOB_RETRY.attempts:
                    raise
                await asyncio.sleep(retry_delay(exc, attempt, BLOB_RETRY))
            attempt += 1

    async def _place(
        self,
        client: RegistryClient,
        repo: str,
        desc: Descriptor,
        source: ImageSource,
        counter: ByteCounter,
    ) -> BlobOutcome:
        session = await self._try_mounts(client, repo, desc, source)
        if isinstance(session, BlobOutcome):
            return session
        try:
            size = await client.head_blob(repo, desc.digest)
            if size != desc.size:
                if session is None:
                    session = await client.start_upload(repo, desc.digest)
                assert session is not None
                await self._upload(client, session, desc, source, counter)
                session = None  # its PUT closed it
        except (Exception, asyncio.CancelledError):
            # Failed or cancelled (the job was, or timed out, or mirrord is stopping) with a
            # session open: DELETE it, its partial data with it (bounded; a retry opens anew).
            if session is not None:
                await client.cancel_upload(session)
            raise
        if size == desc.size:
            if session is not None:
                await client.cancel_upload(session)
            await self.index.record(client.host, repo, desc.digest, desc.size, "head")
            return BlobOutcome.SKIPPED_HEAD
        await self.index.record(client.host, repo, desc.digest, desc.size, "upload")
        return BlobOutcome.UPLOADED

    async def _candidates(
        self, client: RegistryClient, repo: str, desc: Descriptor, source: ImageSource
    ) -> list[str]:
        limit = mount_budget(desc.size)
        found = await self.index.mount_candidates(client.host, desc.digest, repo, limit)
        origin = source.origin
        if origin is not None and origin.registry == client.host and origin.repository != repo:
            found = [origin.repository, *(c for c in found if c != origin.repository)]
        return found[:limit]

    async def _try_mounts(
        self, client: RegistryClient, repo: str, desc: Descriptor, source: ImageSource
    ) -> BlobOutcome | UploadSession | None:
        """Mount from the best known repositories; a refused mount's session is kept for the
        upload, and one superseded by the next candidate's is cancelled."""
        session: UploadSession | None = None
        try:
            for candidate in await self._candidates(client, repo, desc, source):
                if session is not None:
                    stale, session = session, None
                    await client.cancel_upload(stale)
                session = await client.start_upload(repo, desc.digest, mount_from=candidate)
                if session is None:
                    await self.index.record(client.host, repo, desc.digest, desc.size, "mount")
                    return BlobOutcome.MOUNTED
                await self.index.invalidate(client.host, candidate, desc.digest)
        except (Exception, asyncio.CancelledError):
            if session is not None:
                await client.cancel_upload(session)
            raise
        return session

    async def _upload(
        self,
        client: RegistryClient,
        session: UploadSession,
        desc: Descriptor,
        source: ImageSource,
        counter: ByteCounter,
    ) -> None:
        async with self.streams, source.blob(desc) as chunks:
            stream = VerifiedStream(chunks, desc, counter)
            self.observer.transfers_changed(+1)
            try:
                await client.finish_upload(session, desc.digest, desc.size, stream.__aiter__())
            except Exception:
                if stream.error is not None:
                    raise stream.error from None
                raise
            finally:
                self.observer.transfers_changed(-1)
