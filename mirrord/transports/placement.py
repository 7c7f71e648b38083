"""Placing blob files in a local layout: already there | hard link | reflink | verified copy.

A local source (a registry's storage, an OCI layout, a dir) hands out the file holding a blob.
On one filesystem that file is hard-linked: no byte moves, so a bundle of hundreds of MiB is
built in the time a few thousand directory entries take. The source file is first checked to be
a regular file inside its root with the size its descriptor declares (a truncated blob is
refused); with `rehash` its digest is checked as well, which `mirrord verify` always does.
Otherwise the bytes stream into a temp file, hashed on the way, renamed into place only when
they match. One placement per file at a time: images sharing a layer wait for the first.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

from mirrord.errors import IntegrityError
from mirrord.manifests import Descriptor
from mirrord.transports.base import BlobOutcome, ByteCounter, ImageSource
from mirrord.transports.localfs import CHUNK, LocalRoot


@runtime_checkable
class LocalBlobFiles(Protocol):
    """A source whose blobs are files under a LocalRoot (so they can be linked)."""

    fs: LocalRoot

    def blob_file(self, desc: Descriptor) -> Path | None:
        """The checked file holding `desc` (size verified), or None when there is none."""


def check_file_digest(fs: LocalRoot, path: Path, desc: Descriptor) -> None:
    """Re-hash a file; IntegrityError when it does not hold exactly `desc`."""
    digest, size = fs.hash_file(path, desc.digest.split(":", 1)[0])
    if (digest, size) != (desc.digest, desc.size):
        raise IntegrityError(
            f"{path}: holds {digest} ({size} bytes), expected {desc.digest} ({desc.size} bytes)"
        )


class BlobPlacer:
    """Makes blob files present under one LocalRoot, by the cheapest means available."""

    def __init__(self, fs: LocalRoot, *, rehash: bool = False) -> None:
        self.fs = fs
        self.rehash = rehash
        self._flights: dict[Path, asyncio.Event] = {}

    def present(self, path: Path, desc: Descriptor) -> bool:
        """A file of the right size is there (files only land here after verification)."""
        return self.fs.stat_file(path) == desc.size

    async def place(
        self, path: Path, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        """Make `path` hold the blob `desc` from `source`."""
        while True:
            if self.present(path, desc):
                return BlobOutcome.SKIPPED_HEAD
            flight = self._flights.get(path)
            if flight is None:
                break
            await flight.wait()
        self._flights[path] = asyncio.Event()
        try:
            return await self._place(path, desc, source, counter)
        finally:
            self._flights.pop(path).set()

    async def _place(
        self, path: Path, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        if isinstance(source, LocalBlobFiles):
            found = source.blob_file(desc)
            if found is not None and await self._link(source.fs, found, path, desc):
                return BlobOutcome.MOUNTED
        await self._copy(path, desc, source, counter)
        return BlobOutcome.UPLOADED

    async def _link(self, fs: LocalRoot, found: Path, path: Path, desc: Descriptor) -> bool:
        if self.rehash:
            await asyncio.to_thread(check_file_digest, fs, found, desc)
        if self.fs.link_file(found, path):
            return True
        fd = fs.open_file(found)
        try:
            return await asyncio.to_thread(self.fs.clone_file, fd, path)
        finally:
            os.close(fd)

    async def _copy(
        self, path: Path, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> None:
        writer = self.fs.writer(path, desc.digest, desc.size)
        try:
            async with source.blob(desc) as chunks:
                pending: list[bytes] = []
                size = 0
                async for chunk in chunks:
                    pending.append(chunk)
                    size += len(chunk)
                    counter(len(chunk))
                    if size >= CHUNK:
                        # Small network chunks are batched: one thread hop per MiB.
                        await asyncio.to_thread(writer.write, b"".join(pending))
                        pending, size = [], 0
                await asyncio.to_thread(writer.write, b"".join(pending))
            await asyncio.to_thread(writer.commit)
        except BaseException:
            writer.abort()
            raise
