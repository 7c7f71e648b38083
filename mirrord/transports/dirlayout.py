"""The `dir:PATH` transport: skopeo's directory format, one image per directory.

    PATH/version                  "Directory Transport Version: 1.1\\n"
    PATH/manifest.json            the top manifest (or index), byte for byte
    PATH/<hex>.manifest.json      each instance of an index
    PATH/<hex>                    each config and layer blob

skopeo wipes a dir destination before every copy; mirrord updates it in place instead: blobs
already there (checked by name and size, written only after verification) stay, new ones are
added, manifest.json is replaced last, and then files no manifest refers to any more go.
"""

from __future__ import annotations

from pathlib import Path

from mirrord.errors import IntegrityError, LocalStorageError
from mirrord.manifests import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    Manifest,
    compute_digest,
    parse_manifest,
)
from mirrord.refs import digest_hex, is_digest
from mirrord.transports.base import BlobOutcome, ByteCounter, ImageSource, ManifestInfo
from mirrord.transports.fileblobs import FileBlobs
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.placement import BlobPlacer

VERSION = b"Directory Transport Version: 1.1\n"
VERSION_PREFIX = b"Directory Transport Version: 1."
TOP = "manifest.json"
INSTANCE_SUFFIX = ".manifest.json"


class DirImage:
    """One image directory, for reading or (with `create`) writing."""

    def __init__(self, fs: LocalRoot) -> None:
        self.fs = fs
        self.placer = BlobPlacer(fs)

    @classmethod
    def open(cls, root: Path, *, create: bool = False, durable: bool = True) -> DirImage:
        fs = LocalRoot(root, create=create, durable=durable)
        version = fs.read_file(fs.path("version"), 4096)
        if version is None and create and fs.list_dir(fs.root):
            # skopeo's rule too: never write into a directory that holds something else.
            raise LocalStorageError(
                f"{fs.root}: not empty and not a dir: image; refusing to overwrite it"
            )
        if version is not None and not version.startswith(VERSION_PREFIX):
            raise LocalStorageError(f"{fs.root}: unsupported dir: version {version[:60]!r}")
        if version is None and not create:
            raise LocalStorageError(f"{fs.root}: not a dir: image (no version file)")
        return cls(fs)

    def __repr__(self) -> str:
        return f"DirImage({str(self.fs.root)!r})"

    def manifest_path(self, digest: str | None) -> Path:
        return self.fs.path(TOP if digest is None else digest_hex(digest) + INSTANCE_SUFFIX)

    def blob_path(self, digest: str) -> Path:
        return self.fs.path(digest_hex(digest))

    def top(self) -> Manifest | None:
        raw = self.fs.read_file(self.manifest_path(None), MAX_MANIFEST_SIZE)
        return None if raw is None else parse_manifest(raw)

    def read_manifest(self, digest: str) -> Manifest:
        top = self.top()
        if top is not None and top.digest == digest:
            return top
        raw = self.fs.read_file(self.manifest_path(digest), MAX_MANIFEST_SIZE)
        if raw is None:
            raise LocalStorageError(f"{self.fs.root}: manifest {digest} is missing")
        if compute_digest(raw, digest.split(":", 1)[0]) != digest:
            raise IntegrityError(f"{self.fs.root}: {digest} does not match its digest")
        return parse_manifest(raw, None, digest)

    def referenced(self) -> set[str]:
        """File names the current image needs."""
        top = self.top()
        if top is None:
            return set()
        names = {TOP, "version"}
        pending = [top]
        while pending:
            manifest = pending.pop()
            names.update(digest_hex(b.digest) for b in manifest.blobs)
            for child in manifest.children:
                names.add(digest_hex(child.digest) + INSTANCE_SUFFIX)
                if self.fs.stat_file(self.manifest_path(child.digest)) is not None:
                    pending.append(self.read_manifest(child.digest))
        return names

    def prune(self) -> None:
        """Remove blobs, instance manifests and temp files the current image does not use."""
        keep = self.referenced()
        for name in self.fs.list_dir(self.fs.root):
            ours = is_digest(f"sha256:{name.removesuffix(INSTANCE_SUFFIX)}") or ".tmp-" in name
            if ours and name not in keep:
                self.fs.remove(self.fs.path(name))


class DirSource(FileBlobs):
    """Reads the image of a dir: directory."""

    def __init__(self, image: DirImage) -> None:
        self.image = image
        self.fs = image.fs
        self.description = f"dir:{image.fs.root}"

    def __repr__(self) -> str:
        return f"DirSource({self.description!r})"

    def _manifest(self, reference: str) -> Manifest | None:
        if is_digest(reference):
            try:
                return self.image.read_manifest(reference)
            except LocalStorageError:
                return None
        return self.image.top()

    async def head(self, reference: str) -> ManifestInfo | None:
        manifest = self._manifest(reference)
        return (
            None
            if manifest is None
            else ManifestInfo(manifest.digest, manifest.media_type, manifest.size)
        )

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        manifest = self._manifest(reference)
        if manifest is None:
            raise LocalStorageError(f"{self.description}: {reference or 'manifest.json'} not found")
        return manifest.raw, manifest.media_type

    def _blob_location(self, digest: str) -> Path:
        return self.image.blob_path(digest)


class DirDestination:
    """Writes one image into a dir: directory, updating what is already there."""

    def __init__(self, image: DirImage) -> None:
        self.image = image
        self.description = f"dir:{image.fs.root}"

    def __repr__(self) -> str:
        return f"DirDestination({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        top = self.image.top()
        return None if top is None else ManifestInfo(top.digest, top.media_type, top.size)

    async def has_manifest(self, digest: str) -> bool:
        return self.image.fs.stat_file(self.image.manifest_path(digest)) is not None

    async def ensure_blob(
        self, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        self._version()
        return await self.image.placer.place(
            self.image.blob_path(desc.digest), desc, source, counter
        )

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        self._version()
        fs = self.image.fs
        if is_digest(reference):
            fs.write_bytes(self.image.manifest_path(reference), manifest.raw)
            return
        fs.write_bytes(self.image.manifest_path(None), manifest.raw)
        self.image.prune()

    async def forget_blobs(self, digests: tuple[str, ...]) -> None:
        return None

    def _version(self) -> None:
        fs = self.image.fs
        if fs.stat_file(fs.path("version")) is None:
            fs.write_bytes(fs.path("version"), VERSION)
