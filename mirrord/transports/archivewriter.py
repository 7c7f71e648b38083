"""Writing `docker-archive:PATH[:REF]`: images staged as an OCI layout, then one tar file.

The tar is at once a `docker save` archive and an OCI layout, as Docker 25's own is:

    oci-layout, index.json    every image; manifests and blobs byte for byte (digests kept)
    manifest.json             one entry per image for `docker load`: Config and Layers are
                              paths into blobs/ (layers stay compressed: docker load and
                              skopeo decompress them)
    blobs/sha256/<hex>

`docker load` knows no index: an index's manifest.json entry is its instance for `platform`
(the host's, or --override-os/--override-arch); index.json keeps the whole index. Staging is a
directory beside PATH (`.NAME.staging-PID-HEX`, so a local source is hard-linked into it);
the tar is written to a temp file beside PATH (`.NAME.tmp-PID-HEX`) and renamed over it, then
the staging directory goes.
Temp files and staging directories of PATH whose writer is gone (killed mid-write) are
removed before writing.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from mirrord.errors import LocalStorageError, UnsupportedOperation
from mirrord.manifests import Manifest, select_instance
from mirrord.model import Platform
from mirrord.refs import is_digest
from mirrord.transports.jsonfile import dump_json
from mirrord.transports.localfs import (
    CHUNK,
    LocalRoot,
    remove_stale_temps_beside,
    temp_beside,
)
from mirrord.transports.ocilayout import IndexEntry, OciDestination, OciLayout

IMAGE_CONFIGS = frozenset(
    {
        "application/vnd.docker.container.image.v1+json",
        "application/vnd.oci.image.config.v1+json",
    }
)


class ArchiveDestination(OciDestination):
    """Writes into the staging layout of an ArchiveWriter; REF names the image (`repo:tag`)."""

    def __init__(self, layout: OciLayout, target: Path, platform: Platform) -> None:
        super().__init__(layout)
        self.description = f"docker-archive:{target}"
        self.platform = platform

    async def put_manifest(self, reference: str, manifest: Manifest) -> None:
        if not is_digest(reference):  # the image `docker load` gets for this name
            loaded = _loaded_instance(self.layout, manifest, self.platform)
            if loaded is not None and (layer := _foreign_layer(loaded)) is not None:
                raise UnsupportedOperation(
                    f"{self.description}: {reference}: layer {layer} is non-distributable "
                    "(foreign): docker load needs every layer in the archive; export this "
                    "image in the oci or registry-storage format"
                )
        await super().put_manifest(reference, manifest)


class ArchiveWriter:
    """Collects images, then writes them as one archive with `finish()` (or `discard()`)."""

    def __init__(
        self,
        target: Path,
        platform: Platform,
        *,
        skip_data: frozenset[str] = frozenset(),
        rehash: bool = False,
    ) -> None:
        if not target.parent.is_dir():
            raise LocalStorageError(f"{target.parent}: no such directory")
        self.target = target
        self.platform = platform
        remove_stale_temps_beside(target, "staging")  # a killed write's, as large as the tar
        self.fs = LocalRoot(temp_beside(target, "staging"), create=True, durable=False)
        self.layout = OciLayout.at(
            self.fs, create=True, skip_data=skip_data, rehash=rehash, batch=True
        )
        self.extra: dict[str, bytes] = {}  # more top-level members (a bundle's description)

    def __repr__(self) -> str:
        return f"ArchiveWriter({str(self.target)!r})"

    def destination(self) -> ArchiveDestination:
        return ArchiveDestination(self.layout, self.target, self.platform)

    async def finish(self) -> None:
        """Write the archive (atomically replacing PATH) and drop the staging directory."""
        self.layout.flush()
        entries = self.docker_entries()
        try:
            await asyncio.to_thread(self._write_tar, entries)
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.fs.root, ignore_errors=True)

    # -- manifest.json ---------------------------------------------------------------------

    def docker_entries(self) -> list[dict[str, Any]]:
        """`docker load`'s manifest.json: one entry per image, with every name it has."""
        groups: dict[str, dict[str, Any]] = {}
        for entry in self.layout.entries():
            image = self._loadable(entry)
            if image is None:
                continue
            item = groups.setdefault(
                image.digest,
                {
                    "Config": _member(image.blobs[0].digest),
                    "RepoTags": [],
                    "Layers": [_member(b.digest) for b in image.blobs[1:]],
                },
            )
            if entry.name and ":" in entry.name:
                item["RepoTags"].append(entry.name)
        return list(groups.values())

    def _loadable(self, entry: IndexEntry) -> Manifest | None:
        """The image `docker load` gets for an entry (None: not an image it can load)."""
        manifest = self.layout.read_manifest(entry.digest, entry.media_type)
        loaded = _loaded_instance(self.layout, manifest, self.platform)
        if loaded is None or _foreign_layer(loaded) is not None:
            return None  # index.json keeps it; docker load would fail on a missing layer
        return loaded

    # -- the tar ---------------------------------------------------------------------------

    def _write_tar(self, entries: list[dict[str, Any]]) -> None:
        remove_stale_temps_beside(self.target)  # what a killed write of this archive left
        temp = temp_beside(self.target)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(temp, flags, 0o644), "wb") as f:
                with tarfile.TarFile(
                    fileobj=f, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK
                ) as tar:
                    self._add_members(tar, entries)
                f.flush()
                os.fsync(f.fileno())
            temp.rename(self.target)
        except BaseException:
            if temp.exists():
                temp.unlink()
            raise
        self.fs.sync_dir(self.target.parent)

    def _add_members(self, tar: tarfile.TarFile, entries: list[dict[str, Any]]) -> None:
        fs = self.fs
        for name in ("oci-layout", "index.json"):
            data = fs.read_file(fs.path(name), 64 * 1024 * 1024)
            _add_bytes(tar, name, data if data is not None else b"")
        _add_bytes(tar, "manifest.json", dump_json(entries))
        for name, data in sorted(self.extra.items()):
            _add_bytes(tar, name, data)
        blobs = fs.path("blobs")
        for path in fs.walk_files(blobs):
            if ".tmp-" in path.name:
                continue
            info = _info(path.relative_to(fs.root).as_posix(), fs.stat_file(path) or 0)
            with os.fdopen(fs.open_file(path), "rb") as f:
                tar.addfile(info, f)


def _loaded_instance(layout: OciLayout, manifest: Manifest, platform: Platform) -> Manifest | None:
    """The image manifest `docker load` reads for `manifest` (an index's instance for
    `platform`); None when there is none it could load (no such instance, not an image)."""
    if manifest.is_index:
        try:
            chosen = select_instance(manifest, platform)
        except UnsupportedOperation:
            return None
        manifest = layout.read_manifest(chosen.digest, chosen.media_type)
    if not manifest.blobs or manifest.blobs[0].media_type not in IMAGE_CONFIGS:
        return None
    return manifest


def _foreign_layer(manifest: Manifest) -> str | None:
    """The first layer an archive cannot hold (non-distributable: never copied), if any."""
    return next((b.digest for b in manifest.blobs if not b.distributable), None)


def _member(digest: str) -> str:
    return "blobs/" + "/".join(digest.split(":", 1))


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    info.uid = info.gid = 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))
