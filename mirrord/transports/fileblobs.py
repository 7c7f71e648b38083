"""Reading blobs that are files under a local root: shared by the dir, oci and
registry-storage sources."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from mirrord.errors import IntegrityError, LocalStorageError
from mirrord.manifests import Descriptor
from mirrord.transports.base import BlobOrigin
from mirrord.transports.localfs import LocalRoot


class FileBlobs:
    """Mixin for an image source whose blobs are files: `blob_file`, `blob`, `origin`.

    A class using it sets `fs` and `description` and says where a digest's file lives."""

    fs: LocalRoot
    description: str

    def _blob_location(self, digest: str) -> Path:
        raise NotImplementedError

    def blob_file(self, desc: Descriptor) -> Path:
        """The blob's file, after checking it exists and has the size the manifest gives."""
        path = self._blob_location(desc.digest)
        size = self.fs.stat_file(path)
        if size is None:
            raise LocalStorageError(f"{self.description}: blob {desc.digest} is missing")
        if size != desc.size:
            raise IntegrityError(
                f"{self.description}: blob {desc.digest} is {size} bytes, the manifest says "
                f"{desc.size} (truncated or corrupt)"
            )
        return path

    @contextlib.asynccontextmanager
    async def blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.fs.chunks(self.blob_file(desc), desc.size) as chunks:
            yield chunks

    @property
    def origin(self) -> BlobOrigin | None:
        return None
