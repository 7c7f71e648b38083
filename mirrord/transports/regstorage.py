"""The `registry-storage:` transport: Distribution's filesystem layout, read and written.

    ROOT/docker/registry/v2/blobs/sha256/<2 hex>/<hex>/data            every blob and manifest
    ROOT/docker/registry/v2/repositories/<name>/_layers/sha256/<hex>/link       blob in repo
    .../<name>/_manifests/revisions/sha256/<hex>/link                  manifest in repo
    .../<name>/_manifests/tags/<tag>/index/sha256/<hex>/link           tag history
    .../<name>/_manifests/tags/<tag>/current/link                      what the tag names

A link file holds `sha256:<hex>` and nothing else. `docker-registry serve` pointed at ROOT
serves what is written here as is, so a bundle in this layout is a registry's storage:
deduplicated by digest, and built from a pool on the same filesystem with hard links.
Every link read is validated as a digest before it becomes a path; blobs and manifests are
written before the links naming them, and a tag's `current/link` last (the commit point).
"""

from __future__ import annotations

from pathlib import Path

from mirrord.errors import IntegrityError, InvalidReference, LocalStorageError
from mirrord.manifests import (
    MAX_MANIFEST_SIZE,
    Descriptor,
    Manifest,
    compute_digest,
    parse_manifest,
)
from mirrord.refs import check_digest, check_repository, check_tag, is_digest, is_tag
from mirrord.transports.base import BlobOutcome, ByteCounter, ImageSource, ManifestInfo
from mirrord.transports.fileblobs import FileBlobs
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.placement import BlobPlacer

V2 = ("docker", "registry", "v2")
MAX_LINK = 256


class RegistryStorage:
    """One storage root. `skip_data` names blobs another bundle already carries: their links
    are written, their bytes are not (an incremental bundle). Manifests are always written:
    they are small, and an import reads them to push a tag the base did not have."""

    def __init__(
        self, fs: LocalRoot, *, skip_data: frozenset[str] = frozenset(), rehash: bool = False
    ) -> None:
        self.fs = fs
        self.skip_data = skip_data
        self.placer = BlobPlacer(fs, rehash=rehash)
        self._manifests: dict[str, Manifest] = {}  # read once: head() then manifest()
        self.stored: set[str] = set()  # data this object wrote or found in place

    @classmethod
    def open(cls, root: Path, *, create: bool = False, durable: bool = True) -> RegistryStorage:
        """The storage at `root` (refused if it does not look like one, unless `create`)."""
        fs = LocalRoot(root, create=create, durable=durable)
        storage = cls(fs)
        if not create and not fs.is_dir(fs.path(*V2)):
            raise LocalStorageError(
                f"{root}: not a registry storage directory (no docker/registry/v2)"
            )
        return storage

    def __repr__(self) -> str:
        return f"RegistryStorage({str(self.fs.root)!r})"

    # -- paths -----------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexdigest = check_digest(digest).split(":", 1)
        return self.fs.path(*V2, "blobs", algorithm, hexdigest[:2], hexdigest, "data")

    def repo_path(self, repo: str, *parts: str) -> Path:
        return self.fs.path(*V2, "repositories", *check_repository(repo).split("/"), *parts)

    def layer_link(self, repo: str, digest: str) -> Path:
        return self.repo_path(repo, "_layers", *check_digest(digest).split(":", 1), "link")

    def revision_link(self, repo: str, digest: str) -> Path:
        return self.repo_path(
            repo, "_manifests", "revisions", *check_digest(digest).split(":", 1), "link"
        )

    def tag_dir(self, repo: str, tag: str) -> Path:
        return self.repo_path(repo, "_manifests", "tags", check_tag(tag))

    # -- reading ---------------------------------------------------------------------------

    def read_link(self, path: Path) -> str | None:
        """The digest a link file holds (validated), or None when there is no link."""
        data = self.fs.read_file(path, MAX_LINK)
        if data is None:
            return None
        text = data.decode("ascii", "replace").strip()
        try:
            return check_digest(text)
        except InvalidReference:
            raise LocalStorageError(f"{path}: link holds {text[:80]!r}, not a digest") from None

    def resolve(self, repo: str, reference: str) -> str | None:
        """The manifest digest `reference` (a tag or digest) names in `repo`, or None."""
        if is_digest(reference):
            return reference if self.read_link(self.revision_link(repo, reference)) else None
        return self.read_link(self.tag_dir(repo, reference) / "current" / "link")

    def read_manifest(self, digest: str) -> Manifest:
        """The manifest stored under `digest`, checked against it."""
        if digest in self._manifests:
            return self._manifests[digest]
        raw = self.fs.read_file(self.blob_path(digest), MAX_MANIFEST_SIZE)
        if raw is None:
            raise LocalStorageError(
                f"{self.fs.root}: manifest {digest} is missing "
                "(if this is an incremental bundle, its base has it: import that first)"
            )
        if compute_digest(raw, digest.split(":", 1)[0]) != digest:
            raise IntegrityError(f"{self.fs.root}: manifest {digest} does not match its digest")
        manifest = self._manifests[digest] = parse_manifest(raw, None, digest)
        return manifest

    def repositories(self) -> list[str]:
        """Every repository (a directory holding `_manifests`), sorted."""
        found: list[str] = []
        self._find_repos(self.fs.path(*V2, "repositories"), (), found)
        return sorted(found)

    def _find_repos(self, directory: Path, name: tuple[str, ...], found: list[str]) -> None:
        names = self.fs.list_dir(directory)
        if name and "_manifests" in names:
            try:
                found.append(check_repository("/".join(name)))
            except InvalidReference as exc:
                raise LocalStorageError(
                    f"{directory}: not a repository of images ({exc})"
                ) from None
        for child in names:
            if not child.startswith("_") and self.fs.is_dir(directory / child):
                self._find_repos(directory / child, (*name, child), found)

    def tags(self, repo: str) -> list[str]:
        """The repository's tags that point somewhere (invalid names are refused)."""
        tags_dir = self.repo_path(repo, "_manifests", "tags")
        names = self.fs.list_dir(tags_dir)
        for name in names:
            if not is_tag(name):
                raise LocalStorageError(f"{tags_dir}: {name[:80]!r} is not a valid tag")
        return [t for t in names if self.fs.stat_file(tags_dir / t / "current" / "link")]

    def blob_digests(self) -> set[str]:
        """Digests of every blob whose data is stored here (sha256 only, as Distribution)."""
        found = set()
        base = self.fs.path(*V2, "blobs", "sha256")
        for prefix in self.fs.list_dir(base):
            for hexdigest in self.fs.list_dir(base / prefix):
                digest = f"sha256:{hexdigest}"
                if is_digest(digest) and self.fs.stat_file(base / prefix / hexdigest / "data"):
                    found.add(digest)
        return found

    # -- writing ---------------------------------------------------------------------------

    def write_link(self, path: Path, digest: str) -> None:
        """Make the link at `path` hold `digest` (no write when it already does)."""
        data = check_digest(digest).encode()
        if self.fs.stat_file(path) == len(data) and self.fs.read_file(path, MAX_LINK) == data:
            return
        self.fs.write_bytes(path, data)

    def write_manifest_data(self, manifest: Manifest) -> None:
        path = self.blob_path(manifest.digest)
        if self.fs.stat_file(path) != manifest.size:
            self.fs.write_bytes(path, manifest.raw)
        self.stored.add(manifest.digest)

    def data_digests(self) -> set[str]:
        """The data this storage holds: what it stored, if it was empty when opened (no need
        to walk the tree), else what a walk of the blob store finds."""
        return set(self.stored) if self.fs.fresh else self.blob_digests()

    def source(self, repo: str) -> StorageSource:
        return StorageSource(self, check_repository(repo))

    def destination(self, repo: str) -> StorageDestination:
        return StorageDestination(self, check_repository(repo))


class StorageSource(FileBlobs):
    """One repository of a registry's storage, read as an image source."""

    def __init__(self, storage: RegistryStorage, repo: str) -> None:
        self.storage = storage
        self.fs = storage.fs
        self.repo = repo
        self.description = f"registry-storage:{storage.fs.root}:{repo}"

    def __repr__(self) -> str:
        return f"StorageSource({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        digest = self.storage.resolve(self.repo, reference)
        if digest is None:
            return None
        if self.fs.stat_file(self.storage.blob_path(digest)) is None:
            # An incremental bundle names manifests its base carries: the digest is known.
            return ManifestInfo(digest, "", 0)
        manifest = self.storage.read_manifest(digest)
        return ManifestInfo(digest, manifest.media_type, manifest.size)

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        digest = self.storage.resolve(self.repo, reference)
        if digest is None:
            raise LocalStorageError(f"{self.description}: {reference} not found")
        manifest = self.storage.read_manifest(digest)
        return manifest.raw, manifest.media_type

    def _blob_location(self, digest: str) -> Path:
        return self.storage.blob_path(digest)

    async def tags(self) -> list[str]:
        return self.storage.tags(self.repo)


class StorageDestination:
    """One repository of a registry's storage, written as Distribution would."""

    def __init__(self, storage: RegistryStorage, repo: str) -> None:
        self.storage = storage
        self.repo = repo
        self.description = f"registry-storage:{storage.fs.root}:{repo}"

    def __repr__(self) -> str:
        return f"StorageDestination({self.description!r})"

    async def head(self, reference: str) -> ManifestInfo | None:
        digest = self.storage.resolve(self.repo, reference)
        if digest is None:
            return None
        size = self.storage.fs.stat_file(self.storage.blob_path(digest))
        if size is None:
            return None
        return ManifestInfo(digest, "", size)

    async def has_manifest(self, digest: str) -> bool:
        return (
            self.storage.resolve(self.repo, digest) is not None
            and self.storage.fs.stat_file(self.storage.blob_path(digest)) is not None
        )

    async def ensure_blob(
        self, desc: Descriptor, source: ImageSource, counter: ByteCounter
    ) -> BlobOutcome:
        storage = self.storage
        if desc.digest in storage.skip_data:
            outcome = BlobOutcome.SKIPPED_KNOWN
        else:
            outcome = await storage.placer.place(
                storage.blob_path(desc.digest), desc, source, counter
            )
            storage.stored.add(desc.digest)
        storage.write_link(storage.layer_link(self.repo, desc.digest), desc.digest)
        return outcome

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        storage = self.storage
        storage.write_manifest_data(manifest)
        storage.write_link(storage.revision_link(self.repo, manifest.digest), manifest.digest)
        if is_digest(reference):
            if reference != manifest.digest:
                raise IntegrityError(f"manifest {manifest.digest} pushed as {reference}")
            return
        tag_dir = storage.tag_dir(self.repo, reference)
        storage.write_link(
            tag_dir.joinpath("index", *manifest.digest.split(":", 1), "link"), manifest.digest
        )
        storage.write_link(tag_dir / "current" / "link", manifest.digest)

    async def forget_blobs(self, digests: tuple[str, ...]) -> None:
        return None
