"""Reading `docker-archive:PATH[:REF]`: a `docker save` tarball, never extracted.

Two kinds of archive are read:
- with `oci-layout` and `index.json` members (what mirrord writes, and `docker save` since
  Docker 25): manifests and blobs are read from `blobs/<alg>/<hex>` byte for byte, so digests
  survive the trip;
- classic ones (`manifest.json` + `<id>/layer.tar`): there is no registry manifest, so one is
  made, as skopeo does: a Docker schema2 manifest naming the config and each layer file by the
  digest of its bytes (gzip'd files keep their compression). Its digest is therefore new.

REF is `repo:tag` (matched against RepoTags, `docker.io/library/` spelt or not), or `@N`, the
N-th image of manifest.json. Members are looked up by name in an index built once; names with
`..`, absolute names and links that leave the archive are refused, and nothing is written to
disk: member bytes are read with pread() at their offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import posixpath
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from mirrord.errors import IntegrityError, InvalidReference, LocalStorageError, MirrordError
from mirrord.manifests import (
    DOCKER_MANIFEST,
    MAX_MANIFEST_SIZE,
    Descriptor,
    Manifest,
    compute_digest,
    parse_manifest,
)
from mirrord.refs import ImageReference, check_digest, is_digest
from mirrord.transports.base import BlobOrigin, ManifestInfo
from mirrord.transports.jsonfile import load_json, string_map
from mirrord.transports.localfs import CHUNK
from mirrord.transports.ocilayout import IndexEntry, parse_index

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
CONTAINERD_NAME = "io.containerd.image.name"
MAX_LINK_DEPTH = 8
MAX_METADATA = 64 * 1024 * 1024


def member_name(name: str, where: str | Path) -> str:
    """A member name normalised (`./a//b` -> `a/b`); hostile names are refused, naming `where`
    (the archive, or its manifest.json entry)."""
    clean = posixpath.normpath(name) if name else ""
    if name.startswith("/") or clean.startswith("../") or clean in ("..", ".", "") or "\0" in name:
        raise LocalStorageError(f"{where}: member {name[:120]!r}: refusing an unsafe name")
    return clean


@dataclass(frozen=True, slots=True)
class DockerEntry:
    """One image of a classic manifest.json."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def same_reference(a: str, b: str) -> bool:
    """`app:v1` and `docker.io/library/app:v1` name the same image."""
    if a == b:
        return True
    try:
        return ImageReference.parse(a) == ImageReference.parse(b)
    except InvalidReference:
        return False


class ArchiveReader:
    """Random access to the members of an uncompressed tar file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise LocalStorageError(f"{path}: {exc.strerror}") from None
        self._hashes: dict[int, tuple[str, int, bool]] = {}  # by offset: hashed once
        try:
            self._members = self._index()
        except BaseException:
            os.close(self._fd)
            raise

    def _index(self) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            with (
                os.fdopen(os.dup(self._fd), "rb") as f,
                tarfile.open(fileobj=f, mode="r:") as tar,
            ):
                for info in tar:
                    if info.isdir():
                        continue
                    if info.issparse():
                        raise LocalStorageError(f"{self.path}: sparse member {info.name!r}")
                    members[member_name(info.name, self.path)] = info
        except tarfile.TarError as exc:
            raise LocalStorageError(f"{self.path}: not a readable tar archive ({exc})") from None
        return members

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def names(self) -> list[str]:
        return sorted(self._members)

    def _regular(self, name: str) -> tarfile.TarInfo | None:
        """The regular member `name` stands for, following in-archive links."""
        for _ in range(MAX_LINK_DEPTH):
            info = self._members.get(name)
            if info is None:
                return None
            if info.isreg():
                return info
            if info.issym():
                name = member_name(
                    posixpath.join(posixpath.dirname(name), info.linkname), self.path
                )
            elif info.islnk():
                name = member_name(info.linkname, self.path)
            else:
                raise LocalStorageError(f"{self.path}: member {name!r} is not a file")
        raise LocalStorageError(f"{self.path}: member {name!r}: links nested too deep")

    def size(self, name: str) -> int | None:
        info = self._regular(name)
        return None if info is None else info.size

    def read(self, name: str, cap: int) -> bytes | None:
        info = self._regular(name)
        if info is None:
            return None
        if info.size > cap:
            raise LocalStorageError(f"{self.path}: member {name!r} is larger than {cap} bytes")
        return os.pread(self._fd, info.size, info.offset_data)

    def hash(self, name: str) -> tuple[str, int, bool]:
        """(sha256 digest, size, gzip'd?) of a member. Each member is read once: a classic
        archive's files are hashed to name its blobs, then looked up by those names."""
        info = self._regular(name)
        if info is None:
            raise LocalStorageError(f"{self.path}: member {name!r} is missing")
        if info.offset_data not in self._hashes:
            self._hashes[info.offset_data] = self._hash(info)
        return self._hashes[info.offset_data]

    def _hash(self, info: tarfile.TarInfo) -> tuple[str, int, bool]:
        hasher = hashlib.sha256()
        head = b""
        for offset in range(0, info.size, CHUNK):
            chunk = os.pread(self._fd, min(CHUNK, info.size - offset), info.offset_data + offset)
            head = head or chunk[:2]
            hasher.update(chunk)
        return f"sha256:{hasher.hexdigest()}", info.size, head == b"\x1f\x8b"

    @contextlib.asynccontextmanager
    async def chunks(self, name: str, size: int) -> AsyncIterator[AsyncIterator[bytes]]:
        info = self._regular(name)
        if info is None:
            raise LocalStorageError(f"{self.path}: member {name!r} is missing")
        if info.size != size:
            raise IntegrityError(f"{self.path}: {name} is {info.size} bytes, {size} expected")

        async def read() -> AsyncIterator[bytes]:
            for offset in range(0, size, CHUNK):
                n = min(CHUNK, size - offset)
                yield await asyncio.to_thread(os.pread, self._fd, n, info.offset_data + offset)

        yield read()

    # -- the two views -------------------------------------------------------------------

    def oci_entries(self) -> list[IndexEntry] | None:
        """index.json's entries when the archive is also an OCI layout, else None."""
        if self._regular("oci-layout") is None:
            return None
        raw = self.read("index.json", MAX_METADATA)
        return None if raw is None else parse_index(raw, f"{self.path}: index.json")

    def docker_entries(self) -> list[DockerEntry]:
        raw = self.read("manifest.json", MAX_METADATA)
        if raw is None:
            return []
        doc = load_json(raw, f"{self.path}: manifest.json")
        if not isinstance(doc, list):
            raise LocalStorageError(f"{self.path}: manifest.json is not a list")
        return [
            _docker_entry(item, f"{self.path}: manifest.json[{i}]") for i, item in enumerate(doc)
        ]


def _docker_entry(item: Any, where: str) -> DockerEntry:
    if not isinstance(item, dict):
        raise LocalStorageError(f"{where}: not an object")
    config, tags, layers = item.get("Config"), item.get("RepoTags") or [], item.get("Layers")
    if not (isinstance(config, str) and _strings(tags) and _strings(layers)):
        raise LocalStorageError(f"{where}: needs Config, Layers (strings) and RepoTags")
    return DockerEntry(
        member_name(config, where), tuple(tags), tuple(member_name(x, where) for x in layers)
    )


def _strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


class ArchiveSource:
    """An image of a docker-archive; `reference` (REF) picks it, empty for the only one."""

    def __init__(self, reader: ArchiveReader, reference: str = "") -> None:
        self.reader = reader
        self.reference = reference
        self.description = f"docker-archive:{reader.path}"
        self._made: dict[str, tuple[Manifest, dict[str, str]]] = {}  # classic: digest -> files
        self._top: tuple[str, str | None] | None = None

    def __repr__(self) -> str:
        return f"ArchiveSource({self.description!r})"

    def names(self) -> list[str]:
        """Every image name in the archive (for import and sync)."""
        entries = self.reader.oci_entries()
        if entries:
            return sorted({_entry_name(e) for e in entries if _entry_name(e)})
        return sorted({t for e in self.reader.docker_entries() for t in e.repo_tags})

    def _find(self, reference: str) -> tuple[str, str | None] | None:
        """(digest, media type) of the top manifest `reference` names; None when absent."""
        if is_digest(reference):
            known = reference in self._made or self.reader.size(_blob_member(reference)) is not None
            return (reference, None) if known else None
        entries = self.reader.oci_entries()
        if entries:
            found = _pick_oci(entries, reference, self.description)
            if found is not None:
                return found.digest, found.media_type
        entry = _pick_docker(self.reader.docker_entries(), reference, self.description)
        return None if entry is None else (self._make(entry), DOCKER_MANIFEST)

    def _make(self, entry: DockerEntry) -> str:
        """The digest of the manifest made for a classic entry (its files are remembered)."""
        manifest, files = _made_manifest(self.reader, entry)
        self._made[manifest.digest] = (manifest, files)
        return manifest.digest

    def stored(self) -> dict[str, str]:
        """digest -> member of every blob and manifest in the archive, as `blob()` and
        `manifest()` find them: `blobs/<alg>/<hex>`, and, when index.json names no image, the
        config and layer files of each manifest.json image (named by their hash, so they are
        all read; an image whose files cannot be read is left out: reading it says why)."""
        if not self.reader.oci_entries():
            for entry in self.reader.docker_entries():
                with contextlib.suppress(MirrordError):
                    self._make(entry)
        found = {d: name for name in self.reader.names() if (d := _member_digest(name))}
        for _, files in self._made.values():
            found.update(files)
        return found

    def _read(self, digest: str, media_type: str | None) -> Manifest:
        if digest in self._made:
            return self._made[digest][0]
        raw = self.reader.read(_blob_member(digest), MAX_MANIFEST_SIZE)
        if raw is None:
            raise LocalStorageError(f"{self.description}: manifest {digest} is missing")
        if compute_digest(raw, digest.split(":", 1)[0]) != digest:
            raise IntegrityError(f"{self.description}: manifest {digest} does not match its digest")
        return parse_manifest(raw, media_type, digest)

    async def head(self, reference: str) -> ManifestInfo | None:
        found = self._find(reference or self.reference)
        if found is None:
            return None
        manifest = self._read(*found)
        return ManifestInfo(manifest.digest, manifest.media_type, manifest.size)

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        found = self._find(reference or self.reference)
        if found is None:
            raise LocalStorageError(f"{self.description}: no image {reference or self.reference!r}")
        manifest = self._read(*found)
        return manifest.raw, manifest.media_type

    def _member(self, digest: str) -> str:
        for _, files in self._made.values():
            if digest in files:
                return files[digest]
        return _blob_member(digest)

    @contextlib.asynccontextmanager
    async def blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        async with self.reader.chunks(self._member(desc.digest), desc.size) as chunks:
            yield chunks

    @property
    def origin(self) -> BlobOrigin | None:
        return None


def _blob_member(digest: str) -> str:
    return "blobs/" + "/".join(check_digest(digest).split(":", 1))


def _check_named(reader: ArchiveReader, name: str, digest: str) -> None:
    """A member named by its hash (`<hex>.json`, `<hex>.tar`) must hash to its name."""
    stem = posixpath.basename(name).removesuffix(".json").removesuffix(".tar")
    if is_digest(f"sha256:{stem}") and digest != f"sha256:{stem}":
        raise IntegrityError(
            f"{reader.path}: {name}: its bytes hash to {digest} (corrupt or truncated)"
        )


def _diff_ids(reader: ArchiveReader, entry: DockerEntry) -> list[str | None] | None:
    """The config's `rootfs.diff_ids`, one per layer of the entry; None when it has no such
    list (then nothing is compared)."""
    if (reader.size(entry.config) or 0) > MAX_MANIFEST_SIZE:
        return None  # not a config's size; it is copied as it is, only hashed
    raw = reader.read(entry.config, MAX_MANIFEST_SIZE)
    config = load_json(raw or b"null", f"{reader.path}: {entry.config}")
    rootfs = config.get("rootfs") if isinstance(config, dict) else None
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or len(ids) != len(entry.layers):
        return None
    return [i if isinstance(i, str) else None for i in ids]


def _member_digest(name: str) -> str | None:
    """The digest a `blobs/<alg>/<hex>` member is stored under; None for any other member."""
    parts = name.split("/")
    digest = ":".join(parts[1:])
    return digest if len(parts) == 3 and parts[0] == "blobs" and is_digest(digest) else None


def _entry_name(entry: IndexEntry) -> str:
    """The fullest name of an OCI entry (containerd's full reference beats a bare tag)."""
    full = string_map(entry.raw.get("annotations"), "index.json").get(CONTAINERD_NAME)
    return full or entry.name or ""


def _pick_oci(entries: list[IndexEntry], reference: str, where: str) -> IndexEntry | None:
    if not reference:
        if len(entries) != 1:
            raise LocalStorageError(f"{where}: holds {len(entries)} images; name one (:REF)")
        return entries[0]
    for entry in entries:
        if entry.name == reference or same_reference(_entry_name(entry), reference):
            return entry
    return None


def _pick_docker(entries: list[DockerEntry], reference: str, where: str) -> DockerEntry | None:
    if reference.startswith("@"):
        index = reference[1:]
        return entries[int(index)] if index.isdigit() and int(index) < len(entries) else None
    if not reference:
        if len(entries) != 1:
            raise LocalStorageError(f"{where}: holds {len(entries)} images; name one (:REF)")
        return entries[0]
    for entry in entries:
        if any(same_reference(tag, reference) for tag in entry.repo_tags):
            return entry
    return None


def _made_manifest(reader: ArchiveReader, entry: DockerEntry) -> tuple[Manifest, dict[str, str]]:
    """The schema2 manifest of a classic entry, and which member holds each of its blobs.

    A classic archive records no blob digests, but its files are checked against what it does
    record: a member named by its hash (`<hex>.json`, skopeo's `<hex>.tar`) against its name,
    an uncompressed layer (docker save's `<id>/layer.tar`) against the config's `diff_ids`."""
    config_digest, config_size, _ = reader.hash(entry.config)
    _check_named(reader, entry.config, config_digest)
    diff_ids = _diff_ids(reader, entry)
    files = {config_digest: entry.config}
    layers = []
    for name, diff_id in zip(entry.layers, diff_ids or [None] * len(entry.layers), strict=True):
        digest, size, gzipped = reader.hash(name)
        _check_named(reader, name, digest)
        if not gzipped and diff_id is not None and diff_id != digest:
            raise IntegrityError(
                f"{reader.path}: {name}: its bytes hash to {digest}, the image config's "
                f"rootfs.diff_ids says {diff_id} (corrupt or truncated)"
            )
        files[digest] = name
        media_type = DOCKER_LAYER_GZIP if gzipped else DOCKER_LAYER
        layers.append({"mediaType": media_type, "size": size, "digest": digest})
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": DOCKER_CONFIG, "size": config_size, "digest": config_digest},
        "layers": layers,
    }
    return parse_manifest(json.dumps(doc, indent=3).encode(), DOCKER_MANIFEST), files
