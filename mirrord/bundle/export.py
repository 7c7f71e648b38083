"""`mirrord export`: images from a pool into a bundle.

The pool is a registry (`docker://REGISTRY[/PREFIX]`) or a registry's storage directory
(`registry-storage:PATH[:PREFIX]`). The bundle is a registry-storage directory (the default:
`docker-registry serve` serves it as is), an OCI layout, or a docker-archive tar; a
registry-storage or OCI bundle named `*.tar` / `*.tar.zst` is built beside it, then packed.

Every image goes through the transfer engine (`copy_image`): manifests byte for byte, children
before index before tag, every copied byte verified. From a local pool on the same filesystem
blobs are hard-linked (reflink or verified copy otherwise). With `--since`, blobs the previous
bundle carries are referenced but not written. mirrord-bundle.json is written last, after one
syncfs: a bundle without it is incomplete, and running the same export again completes it,
keeping what is already there. A re-run removes the old description before it writes anything
(it may move tags), and marks the directory with mirrord-bundle.incomplete until it is done.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mirrord.bundle.info import (
    BUNDLE_FILE,
    INCOMPLETE_FILE,
    INCOMPLETE_TEXT,
    BundleImage,
    BundleInfo,
)
from mirrord.bundle.select import ExportItem
from mirrord.errors import InvalidReference, LocalStorageError, MirrordError, NotFound
from mirrord.model import Platform, PlatformPolicy
from mirrord.refs import ImageReference
from mirrord.transfer import CopyResult, copy_image
from mirrord.transports.base import ImageDestination, ImageSource
from mirrord.transports.factory import Registries
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.ocilayout import OciDestination, OciLayout
from mirrord.transports.regstorage import V2, RegistryStorage

DEFAULT_JOBS = 8
PACKED_SUFFIXES = (".tar", ".tar.zst")  # as mirrord.bundle.pack's, without importing it


# -- where images come from -----------------------------------------------------------------


class Pool(Protocol):
    """The registry (or registry storage) a LIST was synced to."""

    description: str

    def source(self, repository: str) -> ImageSource: ...

    async def list_tags(self, repository: str) -> list[str]: ...


class StoragePool:
    def __init__(self, storage: RegistryStorage) -> None:
        self.storage = storage
        self.description = f"registry-storage:{storage.fs.root}"

    def source(self, repository: str) -> ImageSource:
        return self.storage.source(repository)

    async def list_tags(self, repository: str) -> list[str]:
        return self.storage.tags(repository)


class RegistryPool:
    def __init__(self, registries: Registries, host: str) -> None:
        self.registries = registries
        self.host = host
        self.description = f"docker://{host}"

    def source(self, repository: str) -> ImageSource:
        return self.registries.source(ImageReference(self.host, repository))

    async def list_tags(self, repository: str) -> list[str]:
        try:
            return await self.registries.pool.source(self.host).list_tags(repository)
        except NotFound:
            return []


# -- where images go -------------------------------------------------------------------------


class BundleWriter(Protocol):
    format: str

    def destination(self, repository: str) -> ImageDestination: ...

    def reference(self, item: ExportItem) -> str:
        """What the image is written under (a tag, a `repo:tag` name, or its digest)."""

    def blob_digests(self) -> set[str]: ...

    async def finish(self, info: BundleInfo) -> None: ...

    def abort(self) -> None: ...


def _mark_incomplete(fs: LocalRoot) -> None:
    """Before anything is written: the old description (a re-run's) vouches for tags this run
    may move, so it goes, and the marker says why there is none until the new one is written."""
    durable = LocalRoot(fs.root)
    durable.write_bytes(durable.path(INCOMPLETE_FILE), INCOMPLETE_TEXT)
    durable.remove(durable.path(BUNDLE_FILE))
    durable.sync_dir(durable.root)


def _write_info(fs: LocalRoot, info: BundleInfo) -> None:
    if not fs.fresh:  # a re-run: what a killed run was writing is not part of the bundle
        fs.remove_stale_temps()
    fs.sync()  # everything the description vouches for is durable before it exists
    durable = LocalRoot(fs.root)
    durable.write_bytes(durable.path(BUNDLE_FILE), info.to_bytes())
    durable.remove(durable.path(INCOMPLETE_FILE))


def _check_target(directory: Path, marker: tuple[str, ...]) -> None:
    if not directory.is_dir() or not any(directory.iterdir()):
        return
    if not (directory / BUNDLE_FILE).exists() and not directory.joinpath(*marker).exists():
        raise LocalStorageError(f"{directory}: not empty and not a bundle: refusing to write there")


class StorageWriter:
    format = "registry-storage"

    def __init__(self, directory: Path, skip: frozenset[str], rehash: bool) -> None:
        _check_target(directory, V2)
        fs = LocalRoot(directory, create=True, durable=False)
        fs.makedirs(fs.path(*V2))
        _mark_incomplete(fs)
        self.storage = RegistryStorage(fs, skip_data=skip, rehash=rehash)

    def destination(self, repository: str) -> ImageDestination:
        return self.storage.destination(repository)

    def reference(self, item: ExportItem) -> str:
        return item.tag or item.pool_reference

    def blob_digests(self) -> set[str]:
        return self.storage.data_digests()

    async def finish(self, info: BundleInfo) -> None:
        await asyncio.to_thread(_write_info, self.storage.fs, info)

    def abort(self) -> None:
        return None  # what is written stays: the next run resumes from it


class OciWriter:
    format = "oci"

    def __init__(self, directory: Path, skip: frozenset[str], rehash: bool) -> None:
        _check_target(directory, ("oci-layout",))
        fs = LocalRoot(directory, create=True, durable=False)
        self.layout = OciLayout.at(fs, create=True, skip_data=skip, rehash=rehash, batch=True)
        _mark_incomplete(fs)
        self._destination = OciDestination(self.layout)

    def destination(self, repository: str) -> ImageDestination:
        return self._destination

    def reference(self, item: ExportItem) -> str:
        return f"{item.repository}:{item.tag}" if item.tag else item.pool_reference

    def blob_digests(self) -> set[str]:
        return self.layout.blob_digests()

    async def finish(self, info: BundleInfo) -> None:
        self.layout.flush()
        await asyncio.to_thread(_write_info, self.layout.fs, info)

    def abort(self) -> None:
        self.layout.flush()  # names of the images already complete, for the next run


class ArchiveBundleWriter:
    format = "docker-archive"

    def __init__(self, target: Path, skip: frozenset[str], rehash: bool, platform: Platform):
        from mirrord.transports.archivewriter import ArchiveWriter

        self.writer = ArchiveWriter(target, platform, skip_data=skip, rehash=rehash)
        self._destination = self.writer.destination()

    def destination(self, repository: str) -> ImageDestination:
        return self._destination

    def reference(self, item: ExportItem) -> str:
        return f"{item.repository}:{item.tag}" if item.tag else item.pool_reference

    def blob_digests(self) -> set[str]:
        return self.writer.layout.blob_digests()

    async def finish(self, info: BundleInfo) -> None:
        self.writer.extra[BUNDLE_FILE] = info.to_bytes()
        await self.writer.finish()

    def abort(self) -> None:
        self.writer.discard()


# -- the export ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportOptions:
    format: str = "registry-storage"
    since: Path | None = None
    platforms: PlatformPolicy = field(default_factory=PlatformPolicy.all)
    archive_platform: Platform = field(default_factory=Platform.host)
    jobs: int = DEFAULT_JOBS
    rehash: bool = False
    workdir: Path | None = None


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    item: ExportItem
    result: CopyResult | None = None
    error: MirrordError | None = None


@dataclass(frozen=True, slots=True)
class ExportReport:
    bundle: Path
    outcomes: tuple[ItemOutcome, ...]
    blobs: dict[str, int]  # blob outcome -> count, over every image
    bytes_copied: int
    blobs_in_bundle: int
    duration: float

    @property
    def failed(self) -> tuple[ItemOutcome, ...]:
        return tuple(o for o in self.outcomes if o.error is not None)


ItemHook = Callable[[ItemOutcome], None]


def _writer(target: Path, options: ExportOptions, skip: frozenset[str]) -> BundleWriter:
    if options.format == "registry-storage":
        return StorageWriter(target, skip, options.rehash)
    if options.format == "oci":
        return OciWriter(target, skip, options.rehash)
    if options.format == "docker-archive":
        return ArchiveBundleWriter(target, skip, options.rehash, options.archive_platform)
    raise InvalidReference(f"unknown bundle format {options.format!r}")


def build_dir(bundle: Path, options: ExportOptions) -> Path | None:
    """Where a packed bundle is built before packing (kept across runs to resume)."""
    if options.format == "docker-archive":
        if bundle.name.endswith(".zst"):
            raise InvalidReference("a docker-archive bundle is a plain .tar (docker load reads it)")
        return None
    if bundle.name.endswith(PACKED_SUFFIXES):
        return bundle.with_name(f".{bundle.name}.partial")
    return None


async def export_bundle(
    items: Sequence[ExportItem],
    pool: Pool,
    bundle: Path,
    options: ExportOptions,
    on_item: ItemHook | None = None,
) -> ExportReport:
    """Export `items` from `pool` into `bundle`; failures of single images are reported, not
    raised (the description lists what the bundle holds)."""
    started = time.monotonic()
    base: frozenset[str] = frozenset()
    if options.since is not None:
        from mirrord.bundle.layouts import covered_blobs  # reads archives: only when asked

        base = covered_blobs(options.since, options.workdir)
    staging = build_dir(bundle, options)
    writer = _writer(staging or bundle, options, base)
    try:
        outcomes = await _copy_all(items, pool, writer, options, on_item)
    except BaseException:
        writer.abort()
        raise
    images = [
        BundleImage(o.item.repository, o.item.tag, o.result.digest)
        for o in outcomes
        if o.result is not None
    ]
    present = frozenset(writer.blob_digests())
    info = BundleInfo(writer.format, tuple(images), present - base, base, pool.description)
    await writer.finish(info)
    if staging is not None:
        from mirrord.bundle.pack import pack

        await asyncio.to_thread(pack, staging, bundle)
        shutil.rmtree(staging)
    return _report(bundle, outcomes, len(info.blobs), started)


async def _copy_all(
    items: Sequence[ExportItem],
    pool: Pool,
    writer: BundleWriter,
    options: ExportOptions,
    on_item: ItemHook | None,
) -> list[ItemOutcome]:
    gate = asyncio.Semaphore(options.jobs)

    async def one(item: ExportItem) -> ItemOutcome:
        async with gate:
            try:
                result = await copy_image(
                    pool.source(item.pool_repository),
                    item.pool_reference,
                    writer.destination(item.repository),
                    writer.reference(item),
                    options.platforms,
                )
                outcome = ItemOutcome(item, result)
            except MirrordError as exc:
                outcome = ItemOutcome(item, error=exc)
        if on_item is not None:
            on_item(outcome)
        return outcome

    return list(await asyncio.gather(*(one(i) for i in items)))


def _report(
    bundle: Path, outcomes: list[ItemOutcome], blobs_in_bundle: int, started: float
) -> ExportReport:
    blobs: Counter[str] = Counter()
    copied = 0
    for outcome in outcomes:
        if outcome.result is not None:
            blobs.update(outcome.result.blobs)
            copied += outcome.result.bytes
    return ExportReport(
        bundle, tuple(outcomes), dict(blobs), copied, blobs_in_bundle, time.monotonic() - started
    )
