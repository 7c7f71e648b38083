"""What the transfer engine needs from a place images live (a registry, a directory, an archive).

A source answers HEAD-like questions, hands out exact manifest bytes and streams blobs. A
destination says what it already has, places blobs (each transport decides how: mount, hard link,
upload), and writes manifests. The engine in `mirrord.transfer` only speaks these verbs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mirrord.manifests import Descriptor, Manifest


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class BlobOrigin:
    """Where a source blob already lives in a registry (a cross-repository mount candidate)."""

    registry: str
    repository: str


class BlobOutcome(StrEnum):
    SKIPPED_KNOWN = "skipped_known"  # the index says the destination repo has it: 0 requests
    SKIPPED_HEAD = "skipped_head"  # the destination answered HEAD 200
    MOUNTED = "mounted"  # cross-repository mount (or hard link for local layouts)
    UPLOADED = "uploaded"  # bytes streamed from the source
    SKIPPED_FOREIGN = "skipped_foreign"  # non-distributable layer, referenced but not copied
    FAILED = "failed"  # could not be placed (the copy fails)


# Called with the number of blob bytes that just moved.
ByteCounter = Callable[[int], None]


class ImageSource(Protocol):
    description: str

    async def head(self, reference: str) -> ManifestInfo | None:
        """Digest and type of the manifest a tag or digest names; None when absent."""

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        """Exact manifest bytes and media type for a tag or digest."""

    def blob(self, desc: Descriptor) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """Stream a blob's raw bytes (the engine verifies size and digest)."""

    @property
    def origin(self) -> BlobOrigin | None:
        """Registry and repository of this source, when it is a registry."""


class ImageDestination(Protocol):
    description: str

    async def head(self, reference: str) -> ManifestInfo | None:
        """What a tag or digest names in the destination now; None when absent."""

    async def has_manifest(self, digest: str) -> bool: ...

    async def ensure_blob(
        self, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        """Make the blob present, verified against `desc`, by the cheapest means available."""

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        """Write exact manifest bytes under a tag or digest (the tag write commits the image)."""

    async def forget_blobs(self, digests: tuple[str, ...]) -> None:
        """Drop cached knowledge of these blobs (after the destination proved it stale)."""
