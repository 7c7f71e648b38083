"""The `oci:PATH[:REF]` transport: an OCI image layout, shared by any number of images.

    PATH/oci-layout              {"imageLayoutVersion": "1.0.0"}
    PATH/index.json              an OCI index; each entry named by its
                                 `org.opencontainers.image.ref.name` annotation
    PATH/blobs/sha256/<hex>      every blob and manifest, once, whatever refers to it

REF is a tag (`v1`) or, in a layout holding several repositories (bundles), `repo:tag`.
Manifests keep their bytes and media type: a Docker schema2 image stays one (skopeo 1.9 can
only address OCI-typed entries by name, see README.md). index.json is replaced
atomically after the manifest it names is in place: naming an image is the commit point.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mirrord.errors import IntegrityError, InvalidReference, LocalStorageError
from mirrord.manifests import (
    MAX_BLOB_SIZE,
    MAX_MANIFEST_SIZE,
    OCI_INDEX,
    Descriptor,
    Manifest,
    compute_digest,
    parse_manifest,
)
from mirrord.refs import DIGEST_RE, ImageReference, check_digest, is_digest, is_tag
from mirrord.transports.base import BlobOutcome, ByteCounter, ImageSource, ManifestInfo
from mirrord.transports.fileblobs import FileBlobs
from mirrord.transports.jsonfile import dump_json, load_json, string_map
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.placement import BlobPlacer

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
MAX_INDEX_FILE = 64 * 1024 * 1024


def check_ref_name(name: str) -> str:
    """A layout entry name mirrord accepts: a tag, or `[registry/]repo:tag`."""
    if is_tag(name):
        return name
    try:
        ref = ImageReference.parse(name)
    except InvalidReference:
        ref = None
    if ref is None or ref.tag is None or ref.digest is not None:
        raise InvalidReference(
            f"invalid OCI layout reference {name[:140]!r}: expected TAG or REPO:TAG"
        )
    return name


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One entry of index.json: a manifest descriptor and the name it is known by."""

    digest: str
    media_type: str
    size: int
    name: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)


def parse_index(raw: bytes, what: str) -> list[IndexEntry]:
    """The entries of an index.json, each checked (digest grammar, size, names)."""
    doc = load_json(raw, what)
    items = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise LocalStorageError(f"{what}: no manifests list")
    return [_entry(item, f"{what}: manifests[{i}]") for i, item in enumerate(items)]


def _entry(item: Any, where: str) -> IndexEntry:
    if not isinstance(item, dict):
        raise LocalStorageError(f"{where}: not an object")
    digest, size, media_type = item.get("digest"), item.get("size"), item.get("mediaType", "")
    if not isinstance(digest, str) or DIGEST_RE.fullmatch(digest) is None:
        raise LocalStorageError(f"{where}: invalid digest {str(digest)[:80]!r}")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_BLOB_SIZE:
        raise LocalStorageError(f"{where}: invalid size {str(size)[:40]!r}")
    if not isinstance(media_type, str):
        raise LocalStorageError(f"{where}: mediaType is not a string")
    name = string_map(item.get("annotations"), where).get(REF_NAME)
    if name is not None:
        try:
            check_ref_name(name)
        except InvalidReference as exc:
            raise LocalStorageError(f"{where}: {exc}") from None
    return IndexEntry(digest, media_type, size, name, item)


class OciLayout:
    """One layout directory. With `batch`, index.json is written by `flush()` only (bundles
    name thousands of images; rewriting the index per image would be quadratic)."""

    def __init__(
        self,
        fs: LocalRoot,
        *,
        skip_data: frozenset[str] = frozenset(),
        rehash: bool = False,
        batch: bool = False,
    ) -> None:
        self.fs = fs
        self.skip_data = skip_data
        self.batch = batch
        self.placer = BlobPlacer(fs, rehash=rehash)
        self._lock = asyncio.Lock()
        self._entries: list[IndexEntry] | None = None
        self._dirty = False

    @classmethod
    def open(cls, root: Path, *, create: bool = False, durable: bool = True) -> OciLayout:
        """The layout at `root`; with `create`, made when missing (an empty index)."""
        fs = LocalRoot(root, create=create, durable=durable)
        return cls.at(fs, create=create)

    @classmethod
    def at(cls, fs: LocalRoot, *, create: bool = False, **kwargs: Any) -> OciLayout:
        layout = cls(fs, **kwargs)
        marker = fs.read_file(fs.path("oci-layout"), 4096)
        if marker is None and not create:
            raise LocalStorageError(f"{fs.root}: not an OCI layout (no oci-layout file)")
        if marker is None:
            if fs.list_dir(fs.root):
                raise LocalStorageError(
                    f"{fs.root}: not empty and not an OCI layout: refusing to write into it"
                )
            fs.write_bytes(fs.path("oci-layout"), LAYOUT_FILE)
        return layout

    def __repr__(self) -> str:
        return f"OciLayout({str(self.fs.root)!r})"

    def blob_path(self, digest: str) -> Path:
        return self.fs.path("blobs", *check_digest(digest).split(":", 1))

    def entries(self) -> list[IndexEntry]:
        if self._entries is None:
            path = self.fs.path("index.json")
            raw = self.fs.read_file(path, MAX_INDEX_FILE)
            self._entries = [] if raw is None else parse_index(raw, str(path))
        return self._entries

    def find(self, name: str) -> IndexEntry | None:
        """The entry named `name`; with an empty name, the only entry of the layout."""
        entries = self.entries()
        if not name:
            if len(entries) != 1:
                raise LocalStorageError(
                    f"{self.fs.root}: holds {len(entries)} images; name one (oci:PATH:REF)"
                )
            return entries[0]
        return next((e for e in entries if e.name == name), None)

    def names(self) -> list[str]:
        return sorted({e.name for e in self.entries() if e.name is not None})

    def read_manifest(self, digest: str, media_type: str | None = None) -> Manifest:
        raw = self.fs.read_file(self.blob_path(digest), MAX_MANIFEST_SIZE)
        if raw is None:
            raise LocalStorageError(f"{self.fs.root}: manifest {digest} is missing")
        if compute_digest(raw, digest.split(":", 1)[0]) != digest:
            raise IntegrityError(f"{self.fs.root}: manifest {digest} does not match its digest")
        return parse_manifest(raw, media_type or None, digest)

    def blob_digests(self) -> set[str]:
        found = set()
        for algorithm in self.fs.list_dir(self.fs.path("blobs")):
            for name in self.fs.list_dir(self.fs.path("blobs", algorithm)):
                if is_digest(f"{algorithm}:{name}"):
                    found.add(f"{algorithm}:{name}")
        return found

    def write_manifest_data(self, manifest: Manifest) -> None:
        # Always, even one in `skip_data`: a manifest is small, and an import of an
        # incremental bundle reads it to push a tag its base did not have.
        path = self.blob_path(manifest.digest)
        if self.fs.stat_file(path) != manifest.size:
            self.fs.write_bytes(path, manifest.raw)

    async def name(self, name: str, manifest: Manifest) -> None:
        """Point `name` at `manifest` (replacing what it named before)."""
        entry = {
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.size,
            "annotations": {REF_NAME: check_ref_name(name)},
        }
        async with self._lock:
            kept = [e for e in self.entries() if e.name != name]
            self._entries = [
                *kept,
                IndexEntry(manifest.digest, manifest.media_type, manifest.size, name, entry),
            ]
            self._dirty = True
            if not self.batch:
                self.flush()

    def flush(self) -> None:
        """Write index.json (atomically) if names changed since it was last written."""
        if not self._dirty:
            return
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [e.raw for e in self.entries()],
        }
        self.fs.write_bytes(self.fs.path("index.json"), dump_json(doc))
        self._dirty = False


class OciSource(FileBlobs):
    """Images of an OCI layout, addressed by entry name or digest."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.fs = layout.fs
        self.description = f"oci:{layout.fs.root}"

    def __repr__(self) -> str:
        return f"OciSource({self.description!r})"

    def _resolve(self, reference: str) -> tuple[str, str | None] | None:
        if is_digest(reference):
            found = self.fs.stat_file(self.layout.blob_path(reference)) is not None
            return (reference, None) if found else None
        entry = self.layout.find(reference)
        return None if entry is None else (entry.digest, entry.media_type)

    async def head(self, reference: str) -> ManifestInfo | None:
        if not is_digest(reference):
            entry = self.layout.find(reference)
            return (
                None if entry is None else ManifestInfo(entry.digest, entry.media_type, entry.size)
            )
        found = self._resolve(reference)
        if found is None:
            return None
        manifest = self.layout.read_manifest(*found)
        return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        found = self._resolve(reference)
        if found is None:
            raise LocalStorageError(f"{self.description}: {reference or 'image'} not found")
        manifest = self.layout.read_manifest(*found)
        return manifest.raw, manifest.media_type

    def _blob_location(self, digest: str) -> Path:
        return self.layout.blob_path(digest)


class OciDestination:
    """Writes images into an OCI layout; a name (REF) is given to the top manifest."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout
        self.description = f"oci:{layout.fs.root}"

    def __repr__(self) -> str:
        return f"OciDestination({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        entry = self.layout.find(reference) if reference else None
        if entry is None or not await self.has_manifest(entry.digest):
            return None
        return ManifestInfo(entry.digest, entry.media_type, entry.size)

    async def has_manifest(self, digest: str) -> bool:
        return self.layout.fs.stat_file(self.layout.blob_path(digest)) is not None

    async def ensure_blob(
        self, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        if desc.digest in self.layout.skip_data:
            return BlobOutcome.SKIPPED_KNOWN
        path = self.layout.blob_path(desc.digest)
        return await self.layout.placer.place(path, desc, source, counter)

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        self.layout.write_manifest_data(manifest)
        if is_digest(reference):
            if reference != manifest.digest:
                raise IntegrityError(f"manifest {manifest.digest} pushed as {reference}")
            return
        await self.layout.name(reference, manifest)

    async def forget_blobs(self, digests: tuple[str, ...]) -> None:
        return None
