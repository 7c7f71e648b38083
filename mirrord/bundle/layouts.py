"""Reading a bundle, whatever its layout: a registry-storage or OCI directory, a docker-archive
tar, or a packed `.tar`/`.tar.zst` (unpacked, checked, into a work directory first).

Which images a bundle holds comes from its mirrord-bundle.json when it has one (each tag must
still name the digest recorded there); otherwise from the layout itself (every tag of a
registry's storage, every `repo:tag` entry of an OCI index or an archive), so a registry's
storage directory copied by hand can be imported too. A directory an export was interrupted
writing (temp files left, or mirrord-bundle.incomplete without a description) is refused.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mirrord.bundle.info import BUNDLE_FILE, INCOMPLETE_FILE, BundleInfo
from mirrord.bundle.pack import is_packed_name, read_first_member, unpack
from mirrord.config.naming import repository_path
from mirrord.errors import InvalidReference, LocalStorageError
from mirrord.manifests import Descriptor
from mirrord.refs import ImageReference
from mirrord.transports.base import ImageSource
from mirrord.transports.dockerarchive import ArchiveReader, ArchiveSource
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.ocilayout import OciLayout, OciSource
from mirrord.transports.regstorage import V2, RegistryStorage

MAX_INFO = 256 * 1024 * 1024
NO_DESCRIPTION = f"no {BUNDLE_FILE}: an interrupted export (run it again), or not a mirrord bundle"


@dataclass(frozen=True, slots=True)
class Entry:
    """An image of a bundle and the reference that reads it from the bundle's source;
    `digest` is the one mirrord-bundle.json records (None: the bundle has no description)."""

    repository: str
    tag: str | None
    reference: str
    digest: str | None = None

    @property
    def order(self) -> tuple[str, str, str]:
        """Sort key: by repository, then tag (digest-only images first)."""
        return (self.repository, self.tag or "", self.reference)

    @property
    def name(self) -> str:
        return (
            f"{self.repository}:{self.tag}" if self.tag else f"{self.repository}@{self.reference}"
        )

    def digest_problem(self, resolved: str) -> str | None:
        """Why the manifest `reference` resolves to is not this image (None: it is)."""
        if self.digest is None or resolved == self.digest:
            return None
        return f"resolves to {resolved}, {BUNDLE_FILE} says {self.digest}"


class Bundle(Protocol):
    """A bundle opened for reading."""

    format: str
    path: Path
    info: BundleInfo | None

    def entries(self) -> list[Entry]: ...

    def source(self, entry: Entry) -> ImageSource: ...

    def blob_digests(self) -> set[str]:
        """Digests of the data (blobs and manifests) physically in the bundle."""

    def rehash(self, digest: str) -> tuple[str, int]:
        """(digest, size) of the bytes stored under `digest`, computed from the bytes."""

    def blob_problem(self, entry: Entry, desc: Descriptor) -> str | None:
        """Why the image cannot use blob `desc` from the bundle (None: it can)."""

    def scan(self) -> list[str]:
        """Problems with the bundle's files as files (symlinks, strays, an interrupted export)."""


def _from_info(info: BundleInfo, reference: str) -> list[Entry]:
    """Entries from a description; `reference` is "tag", "name" or "digest" (what reads it)."""
    entries = []
    for image in info.images:
        if image.tag is None:
            ref = image.digest
        elif reference == "name":
            ref = f"{image.repository}:{image.tag}"
        else:
            ref = image.tag
        entries.append(Entry(image.repository, image.tag, ref, image.digest))
    return sorted(entries, key=lambda image: image.order)


class StorageBundle:
    format = "registry-storage"

    def __init__(self, path: Path, info: BundleInfo | None) -> None:
        self.path = path
        self.info = info
        self.storage = RegistryStorage.open(path)

    def entries(self) -> list[Entry]:
        if self.info is not None:
            return _from_info(self.info, "tag")
        storage = self.storage
        return [Entry(r, t, t) for r in storage.repositories() for t in storage.tags(r)]

    def source(self, entry: Entry) -> ImageSource:
        return self.storage.source(entry.repository)

    def blob_digests(self) -> set[str]:
        return self.storage.blob_digests()

    def rehash(self, digest: str) -> tuple[str, int]:
        return self.storage.fs.hash_file(self.storage.blob_path(digest))

    def blob_problem(self, entry: Entry, desc: Descriptor) -> str | None:
        storage = self.storage
        if storage.read_link(storage.layer_link(entry.repository, desc.digest)) is None:
            return f"{entry.repository}: no _layers link for {desc.digest}"
        return _size_problem(storage.fs.stat_file(storage.blob_path(desc.digest)), desc)

    def scan(self) -> list[str]:
        return _scan(self.storage.fs, self.info)


class OciBundle:
    format = "oci"

    def __init__(self, path: Path, info: BundleInfo | None) -> None:
        self.path = path
        self.info = info
        self.layout = OciLayout.open(path)
        self._source = OciSource(self.layout)

    def entries(self) -> list[Entry]:
        if self.info is not None:
            return _from_info(self.info, "name")
        return _named_entries(self.layout.names(), self.path)

    def source(self, entry: Entry) -> ImageSource:
        return self._source

    def blob_digests(self) -> set[str]:
        return self.layout.blob_digests()

    def rehash(self, digest: str) -> tuple[str, int]:
        return self.layout.fs.hash_file(self.layout.blob_path(digest))

    def blob_problem(self, entry: Entry, desc: Descriptor) -> str | None:
        return _size_problem(self.layout.fs.stat_file(self.layout.blob_path(desc.digest)), desc)

    def scan(self) -> list[str]:
        return _scan(self.layout.fs, self.info)


class ArchiveBundle:
    format = "docker-archive"

    def __init__(self, path: Path, reader: ArchiveReader, info: BundleInfo | None) -> None:
        self.path = path
        self.reader = reader
        self.info = info

    def entries(self) -> list[Entry]:
        if self.info is not None:
            return _from_info(self.info, "name")
        return _named_entries(ArchiveSource(self.reader).names(), self.path)

    def source(self, entry: Entry) -> ImageSource:
        return ArchiveSource(self.reader, entry.reference)

    @functools.cached_property
    def _stored(self) -> dict[str, str]:
        return ArchiveSource(self.reader).stored()

    def blob_digests(self) -> set[str]:
        return set(self._stored)

    def rehash(self, digest: str) -> tuple[str, int]:
        if digest not in self._stored:
            raise LocalStorageError(f"{self.path}: no member holds {digest}")
        actual, size, _ = self.reader.hash(self._stored[digest])
        return actual, size

    def blob_problem(self, entry: Entry, desc: Descriptor) -> str | None:
        member = self._stored.get(desc.digest)
        return _size_problem(None if member is None else self.reader.size(member), desc)

    def scan(self) -> list[str]:
        return []


def _named_entries(names: list[str], path: Path) -> list[Entry]:
    """The images of an archive or an OCI layout without a description, named as `docker load`
    users and image lists name them: by the repository's path without its registry
    (`docker.io/library/web:v1` is `web:v1`); each is read by the name the layout gives it. Two
    names that would import as one are refused."""
    entries: list[Entry] = []
    seen: dict[str, str] = {}  # import name -> name in the layout
    for name in names:
        entry = _named_entry(name, path)
        if entry.name in seen:
            raise LocalStorageError(
                f"{path}: {seen[entry.name]!r} and {name!r} would both import as {entry.name!r}"
            )
        seen[entry.name] = name
        entries.append(entry)
    return sorted(entries, key=lambda image: image.order)


def _named_entry(name: str, path: Path) -> Entry:
    try:
        ref = ImageReference.parse(name)
    except InvalidReference as exc:
        raise LocalStorageError(f"{path}: {exc}") from None
    if ref.tag is None and ref.digest is None:
        raise LocalStorageError(f"{path}: entry {name[:140]!r} names no repository and tag")
    return Entry(repository_path(ref), ref.tag, name if ref.tag else ref.reference)


def _size_problem(size: int | None, desc: Descriptor) -> str | None:
    if size is None:
        return f"blob {desc.digest} is missing"
    if size != desc.size:
        return f"blob {desc.digest} is {size} bytes, {desc.size} expected (truncated?)"
    return None


def _scan(fs: LocalRoot, info: BundleInfo | None) -> list[str]:
    try:
        stray = [p for p in fs.walk_files(fs.root) if ".tmp-" in p.name]
    except LocalStorageError as exc:
        return [str(exc)]
    problems = [
        f"{p}: left over from an interrupted write (an export killed part-way: run it again)"
        for p in stray[:10]
    ]
    # Without a description a directory is a registry's own storage (imported as it is) unless
    # an export left its traces: then it is one that export never finished.
    if info is None and (stray or fs.stat_file(fs.path(INCOMPLETE_FILE)) is not None):
        problems.append(NO_DESCRIPTION)
    return problems


def read_info(path: Path) -> BundleInfo | None:
    """A bundle's description, from a directory, a packed bundle or an archive; None if absent."""
    if path.is_dir():
        fs = LocalRoot(path)
        raw = fs.read_file(fs.path(BUNDLE_FILE), MAX_INFO)
    elif is_packed(path):
        raw = read_first_member(path, BUNDLE_FILE, MAX_INFO)
    else:
        with ArchiveReader(path) as reader:
            raw = reader.read(BUNDLE_FILE, MAX_INFO)
    return None if raw is None else BundleInfo.from_bytes(raw, f"{path}: {BUNDLE_FILE}")


def is_packed(path: Path) -> bool:
    """A packed bundle (its description is the first member), as opposed to a docker-archive
    tar (which starts with `oci-layout`). One that lost its tail is still a packed bundle: its
    unpacking then fails on the missing checksums, which says what happened."""
    if path.name.endswith(".zst"):
        return True
    return read_first_member(path, BUNDLE_FILE, MAX_INFO) is not None


@contextlib.contextmanager
def open_bundle(path: Path, workdir: Path | None = None) -> Iterator[Bundle]:
    """Open a bundle for reading; a packed one is unpacked (and checked) under `workdir`."""
    if not path.exists():
        raise LocalStorageError(f"{path}: no such bundle")
    if path.is_dir():
        yield _open_dir(path)
        return
    if is_packed_name(path) and is_packed(path):
        scratch = Path(tempfile.mkdtemp(prefix="mirrord-bundle-", dir=workdir))
        try:
            unpack(path, scratch / "bundle")
            yield _open_dir(scratch / "bundle")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    with ArchiveReader(path) as reader:
        raw = reader.read(BUNDLE_FILE, MAX_INFO)
        info = None if raw is None else BundleInfo.from_bytes(raw, f"{path}: {BUNDLE_FILE}")
        yield ArchiveBundle(path, reader, info)


def _open_dir(path: Path) -> Bundle:
    info = read_info(path)
    fs = LocalRoot(path)
    if fs.is_dir(fs.path(*V2)):
        return StorageBundle(path, info)
    if fs.stat_file(fs.path("oci-layout")) is not None:
        return OciBundle(path, info)
    raise LocalStorageError(
        f"{path}: not a bundle (neither a registry storage nor an OCI layout directory)"
    )


def covered_blobs(path: Path, workdir: Path | None = None) -> frozenset[str]:
    """Every blob a previous bundle (and its own bases) carry: what `--since` leaves out."""
    info = read_info(path) if path.exists() else None
    if info is not None:
        return info.covers
    with open_bundle(path, workdir) as bundle:
        problems = bundle.scan()  # an interrupted export: its images cannot be imported
        if problems:
            raise LocalStorageError(f"{path}: cannot be the base of --since: {problems[0]}")
        return frozenset(bundle.blob_digests())
