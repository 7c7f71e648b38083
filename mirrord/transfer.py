"""Copy one image: resolve once, walk the DAG by digest, blobs -> manifests -> tag.

1. HEAD the source reference: its digest is the job's snapshot. With every platform copied, a
   destination tag already at that digest means there is nothing to do (2 requests, no GET).
2. GET the source manifest by that digest (verified). Everything below it is fetched by digest,
   so a tag that moves mid-copy still yields one consistent image.
3. Children of an index are copied depth-first and pushed by digest; then blobs; then the tag,
   which is the single commit point: a tag never points at an image with missing parts.
Manifest bytes are pushed exactly as fetched. The only new document mirrord ever makes is the
index of a platform subset, and the result says so.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from mirrord.errors import InvalidManifest, ManifestUnknown, RegistryError
from mirrord.manifests import (
    IMAGE_TYPES,
    MAX_INDEX_DEPTH,
    Descriptor,
    Manifest,
    children_for_policy,
    parse_manifest,
    select_instance,
    subset_index,
)
from mirrord.model import PlatformMode, PlatformPolicy
from mirrord.refs import is_digest
from mirrord.transports.base import BlobOutcome, ImageDestination, ImageSource

T = TypeVar("T")


@dataclass(slots=True)
class CopyStats:
    bytes: int = 0
    blobs: Counter[str] = field(default_factory=Counter)
    manifests_pushed: int = 0

    def count_bytes(self, n: int) -> None:
        self.bytes += n


@dataclass(frozen=True, slots=True)
class CopyResult:
    digest: str  # what the destination reference now names
    source_digest: str  # the snapshot taken from the source
    skipped: bool  # the destination already had it
    bytes: int
    blobs: dict[str, int]
    manifests_pushed: int
    duration: float
    note: str = ""

    @property
    def outcome(self) -> str:
        return "skipped" if self.skipped else "copied"


# Reports blob bytes as they move (for progress displays and metrics).
ByteHook = Callable[[int], None]
BlobHook = Callable[[Descriptor, BlobOutcome], None]


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that error as is."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _none() -> None:
    return None


class ImageCopy:
    """One copy of one image between two transports. Use `copy_image()`."""

    def __init__(
        self,
        source: ImageSource,
        destination: ImageDestination,
        policy: PlatformPolicy,
        on_bytes: ByteHook | None = None,
        on_blob: BlobHook | None = None,
    ) -> None:
        self.source = source
        self.destination = destination
        self.policy = policy
        self.stats = CopyStats()
        self._on_bytes = on_bytes
        self._on_blob = on_blob
        self.note = ""

    async def run(
        self, src_ref: str, dst_ref: str | None, skip_unchanged: bool = True
    ) -> CopyResult:
        started = time.monotonic()
        check = skip_unchanged and dst_ref is not None
        # The two HEADs of the up-to-date check go out together: one round trip, not two.
        head, current = await asyncio.gather(
            self.source.head(src_ref),
            self.destination.head(dst_ref) if check and dst_ref else _none(),
        )
        if head is None:
            sep = "@" if is_digest(src_ref) else ":"
            raise ManifestUnknown(
                f"{self.source.description}{sep}{src_ref}: no such image (manifest unknown)"
            )
        # The whole image is copied when the policy says so or when there is no list to pick
        # a platform from: then equal digests settle it without reading the manifest.
        whole = self.policy.mode is PlatformMode.ALL or head.media_type in IMAGE_TYPES
        if current is not None and whole and current.digest == head.digest:
            return self._result(head.digest, head.digest, True, started)
        top = await self._select(await self._fetch(head.digest))
        if current is not None and current.digest == top.digest:
            return self._result(top.digest, head.digest, True, started)
        await self._copy_tree(top, depth=0, path=())
        await self._push(dst_ref or top.digest, top)
        return self._result(top.digest, head.digest, False, started)

    def _result(self, digest: str, source_digest: str, skipped: bool, started: float) -> CopyResult:
        return CopyResult(
            digest=digest,
            source_digest=source_digest,
            skipped=skipped,
            bytes=self.stats.bytes,
            blobs=dict(self.stats.blobs),
            manifests_pushed=self.stats.manifests_pushed,
            duration=time.monotonic() - started,
            note=self.note,
        )

    async def _fetch(self, digest: str) -> Manifest:
        raw, media_type = await self.source.manifest(digest)
        return parse_manifest(raw, media_type, digest)

    async def _select(self, top: Manifest) -> Manifest:
        """Apply the platform policy to the top-level manifest."""
        if not top.is_index or self.policy.mode is PlatformMode.ALL:
            return top
        if self.policy.mode is PlatformMode.SYSTEM:
            chosen = select_instance(top, self.policy.platforms[0])
            return await self._fetch(chosen.digest)
        subset = subset_index(top, children_for_policy(top, self.policy))
        if subset.digest != top.digest:
            self.note = f"platform subset: new index {subset.digest} (source index {top.digest})"
        return subset

    async def _copy_tree(self, manifest: Manifest, depth: int, path: tuple[str, ...]) -> None:
        if manifest.digest in path:
            raise InvalidManifest(f"index {manifest.digest} refers to itself (cycle)")
        if depth > MAX_INDEX_DEPTH:
            raise InvalidManifest(f"indexes nested deeper than {MAX_INDEX_DEPTH}")
        if manifest.is_index:
            path = (*path, manifest.digest)
            await gather_all(self._copy_child(c.digest, depth, path) for c in manifest.children)
        else:
            await self._copy_blobs(manifest)

    async def _copy_child(self, digest: str, depth: int, path: tuple[str, ...]) -> None:
        if await self.destination.has_manifest(digest):
            return
        child = await self._fetch(digest)
        await self._copy_tree(child, depth + 1, path)
        await self._push(digest, child)

    async def _copy_blobs(self, manifest: Manifest) -> None:
        unique = {b.digest: b for b in manifest.blobs}
        await gather_all(self._copy_blob(b) for b in unique.values())

    async def _copy_blob(self, desc: Descriptor) -> None:
        try:
            if not desc.distributable:
                outcome = BlobOutcome.SKIPPED_FOREIGN
            else:
                outcome = await self.destination.ensure_blob(desc, self.source, self._count)
        except Exception:
            self._blob_done(desc, BlobOutcome.FAILED)
            raise
        self._blob_done(desc, outcome)

    def _blob_done(self, desc: Descriptor, outcome: BlobOutcome) -> None:
        self.stats.blobs[outcome.value] += 1
        if self._on_blob is not None:
            self._on_blob(desc, outcome)

    def _count(self, n: int) -> None:
        self.stats.bytes += n
        if self._on_bytes is not None:
            self._on_bytes(n)

    async def _push(self, reference: str, manifest: Manifest) -> None:
        try:
            await self.destination.put_manifest(reference, manifest)
        except RegistryError as exc:
            if "MANIFEST_BLOB_UNKNOWN" not in exc.codes:
                raise
            # Our index trusted a blob the registry no longer has: re-check and push again.
            await self.destination.forget_blobs(tuple(b.digest for b in manifest.blobs))
            await self._copy_tree(manifest, depth=0, path=())
            await self.destination.put_manifest(reference, manifest)
        self.stats.manifests_pushed += 1


async def copy_image(
    source: ImageSource,
    src_ref: str,
    destination: ImageDestination,
    dst_ref: str | None,
    policy: PlatformPolicy,
    *,
    skip_unchanged: bool = True,
    on_bytes: ByteHook | None = None,
    on_blob: BlobHook | None = None,
) -> CopyResult:
    """Copy the image `src_ref` names to `dst_ref` (a tag or digest; None = by digest)."""
    copy = ImageCopy(source, destination, policy, on_bytes, on_blob)
    return await copy.run(src_ref, dst_ref, skip_unchanged)
