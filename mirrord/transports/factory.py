"""Opening a location (`docker://…`, `dir:…`, `oci:…`, `docker-archive:…`, `registry-storage:…`)
as an image source or destination, for the commands that take one image: copy, inspect.

The registry transport is imported only when a `docker://` location is opened: a command that
only touches local files never pays for the HTTP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mirrord.errors import InvalidReference, LocalStorageError
from mirrord.model import Platform
from mirrord.refs import ImageReference, check_repository, is_digest
from mirrord.transports.base import ImageDestination, ImageSource
from mirrord.transports.dirlayout import DirDestination, DirImage, DirSource
from mirrord.transports.location import DockerLocation, LocalLocation, Location
from mirrord.transports.ocilayout import OciDestination, OciLayout, OciSource
from mirrord.transports.regstorage import RegistryStorage

if TYPE_CHECKING:
    from mirrord.blobs import BlobService
    from mirrord.transports.archivewriter import ArchiveWriter
    from mirrord.transports.docker import ClientPool, OptionsFor

DEFAULT_BLOB_STREAMS = 6


class Registries:
    """The `docker://` side of one command: a client pool and a blob service, made on demand."""

    def __init__(self, options_for: OptionsFor, streams: int = DEFAULT_BLOB_STREAMS) -> None:
        self._options_for = options_for
        self._streams = streams
        self._pool: ClientPool | None = None
        self._blobs: BlobService | None = None

    @property
    def pool(self) -> ClientPool:
        if self._pool is None:
            from mirrord.transports.docker import ClientPool

            self._pool = ClientPool(self._options_for)
        return self._pool

    def source(self, ref: ImageReference) -> ImageSource:
        from mirrord.transports.docker import RegistrySource

        return RegistrySource(self.pool.source(ref.registry), ref.repository)

    def destination(self, ref: ImageReference) -> ImageDestination:
        from mirrord.blobs import BlobService, MemoryBlobIndex
        from mirrord.transports.docker import RegistryDestination

        if self._blobs is None:
            self._blobs = BlobService(MemoryBlobIndex(), asyncio.Semaphore(self._streams))
        return RegistryDestination(self.pool.destination(ref.registry), ref.repository, self._blobs)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def __aenter__(self) -> Registries:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@dataclass(frozen=True, slots=True)
class Names:
    """What a location says about an image's name, for defaulting the other side's."""

    repository: str | None = None
    tag: str | None = None

    def joined(self) -> str | None:
        return f"{self.repository}:{self.tag or 'latest'}" if self.repository else self.tag


def split_repo_reference(text: str) -> tuple[str, str | None]:
    """`REPO[:TAG|@DIGEST]` -> (repo, tag-or-digest or None), validated."""
    repo, at, digest = text.partition("@")
    if at:
        return check_repository(repo), digest if is_digest(digest) else _bad(text)
    head, colon, tag = repo.rpartition(":")
    if colon and "/" not in tag:
        return check_repository(head), tag
    return check_repository(repo), None


def _bad(text: str) -> NoReturn:
    raise InvalidReference(f"invalid reference {text[:140]!r}: expected REPO[:TAG|@DIGEST]")


def names_of(location: Location) -> Names:
    """The repository and tag a location names, as far as it names them."""
    if isinstance(location, DockerLocation):
        return Names(location.ref.repository, location.ref.tag)
    if location.reference is None or location.transport == "dir":
        return Names()
    if location.transport == "registry-storage":
        repo, ref = split_repo_reference(location.reference)
        return Names(repo, ref if ref and not is_digest(ref) else None)
    head, colon, tag = location.reference.rpartition(":")
    return Names(head, tag) if colon else Names(None, location.reference)


@contextlib.asynccontextmanager
async def open_source(
    location: Location, registries: Registries
) -> AsyncIterator[tuple[ImageSource, str]]:
    """The source a location names, and the reference to read from it."""
    if isinstance(location, DockerLocation):
        yield registries.source(location.ref), location.ref.reference
        return
    path, reference = location.path, location.reference or ""
    if location.transport == "dir":
        yield DirSource(DirImage.open(path)), ""
    elif location.transport == "oci":
        yield OciSource(OciLayout.open(path)), reference
    elif location.transport == "docker-archive":
        from mirrord.transports.dockerarchive import ArchiveReader, ArchiveSource

        with ArchiveReader(path) as reader:
            yield ArchiveSource(reader, reference), reference
    else:
        repo, ref = split_repo_reference(_needs_repo(location))
        yield RegistryStorage.open(path).source(repo), ref or "latest"


@contextlib.asynccontextmanager
async def open_destination(
    location: Location, registries: Registries, source_names: Names, platform: Platform
) -> AsyncIterator[tuple[ImageDestination, str]]:
    """The destination a location names, and the reference (tag or digest) to write there;
    a missing name is taken from the source's (`source_names`), as skopeo does."""
    if isinstance(location, DockerLocation):
        image = location.ref
        yield (
            registries.destination(image),
            image.digest or image.tag or source_names.tag or "latest",
        )
        return
    path = location.path
    if location.transport == "dir":
        yield DirDestination(DirImage.open(path, create=True)), "latest"
    elif location.transport == "oci":
        name = location.reference or source_names.tag or "latest"
        yield OciDestination(OciLayout.open(path, create=True)), name
    elif location.transport == "docker-archive":
        async with _archive(path, platform) as writer:
            archived = location.reference or source_names.joined()
            if not archived or ":" not in archived:
                raise InvalidReference(f"{location}: name the image (docker-archive:PATH:REPO:TAG)")
            yield writer.destination(), archived
    else:
        text = location.reference or source_names.joined() or ""
        repo, tag = split_repo_reference(_needs_repo(LocalLocation(location.transport, path, text)))
        storage = RegistryStorage.open(path, create=True)
        yield storage.destination(repo), tag or source_names.tag or "latest"


@contextlib.asynccontextmanager
async def _archive(path: Path, platform: Platform) -> AsyncIterator[ArchiveWriter]:
    from mirrord.transports.archivewriter import ArchiveWriter

    _refuse_existing_archive(path)
    writer = ArchiveWriter(path, platform)
    try:
        yield writer
    except BaseException:
        writer.discard()
        raise
    await writer.finish()


def _refuse_existing_archive(path: Path) -> None:
    """A docker-archive is written whole: copying into an existing one would replace the images
    it holds with this one. skopeo refuses too; an empty file (`mktemp`) is fine."""
    try:
        existing = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LocalStorageError(f"{path}: cannot use it ({exc.strerror or exc})") from None
    if existing.st_size or not stat.S_ISREG(existing.st_mode):
        raise LocalStorageError(
            f"{path}: already exists; a docker-archive cannot take one more image (the images in "
            "it would be lost): write a new file, or remove this one first"
        )


def _needs_repo(location: LocalLocation) -> str:
    if not location.reference:
        raise InvalidReference(
            f"{location}: name the repository (registry-storage:PATH:REPO[:TAG|@DIGEST])"
        )
    return location.reference
