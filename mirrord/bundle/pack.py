"""Packing a bundle directory into one `.tar` or `.tar.zst` file, and unpacking it safely.

    mirrord-bundle.json     first: what the bundle holds, readable without reading the rest
    docker/registry/v2/...  (or oci-layout, index.json, blobs/...) every file of the bundle
    SHA256SUMS              last: `<sha256>  <path>` per file, as `sha256sum -c` reads it

Packing hashes every file as it goes into the tar; a blob whose bytes do not match its name
is refused then and there. Unpacking accepts only regular files and directories with safe
names, writes nothing outside its target, and checks every file against SHA256SUMS (and every
blob against its name); on any mismatch the unpacked directory is removed.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, BinaryIO

import zstandard

from mirrord.bundle.info import BUNDLE_FILE
from mirrord.errors import IntegrityError, LocalStorageError
from mirrord.transports.dockerarchive import member_name
from mirrord.transports.localfs import (
    CHUNK,
    LocalRoot,
    check_component,
    remove_stale_temps_beside,
    temp_beside,
)

SUMS_FILE = "SHA256SUMS"
PACKED_SUFFIXES = (".tar", ".tar.zst")
_BLOB_NAME = re.compile(r"(?:^|/)blobs/sha256/(?:[0-9a-f]{2}/)?([0-9a-f]{64})(?:/data)?$")


def is_packed_name(path: Path) -> bool:
    return path.name.endswith(PACKED_SUFFIXES)


def blob_digest_of(name: str) -> str | None:
    """The digest a bundle file name promises (`blobs/sha256/<hex>` or `.../<hex>/data`)."""
    match = _BLOB_NAME.search(name)
    if match is None or (name.endswith("/data") and f"/{match[1][:2]}/" not in name):
        return None
    return f"sha256:{match[1]}"


class _HashingReader(io.BufferedIOBase):
    """What tarfile reads from a file, hashed on the way."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        data = self._f.read(-1 if n is None else n)
        self.sha256.update(data)
        return data


@contextmanager
def _tar_writer(path: Path, compress: bool) -> Iterator[tarfile.TarFile]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o644), "wb") as raw:
        if compress:
            compressor = zstandard.ZstdCompressor(level=3, threads=-1)
            with (
                compressor.stream_writer(raw, closefd=False) as zst,
                tarfile.open(fileobj=zst, mode="w|", format=tarfile.PAX_FORMAT) as tar,
            ):
                yield tar
        else:
            with tarfile.open(fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                yield tar
        raw.flush()
        os.fsync(raw.fileno())


def pack(directory: Path, target: Path) -> int:
    """Pack a bundle directory into `target` (`.tar` or `.tar.zst`, replaced atomically);
    returns the number of files packed."""
    fs = LocalRoot(directory)
    remove_stale_temps_beside(target)  # what a killed pack of `target` left
    temp = temp_beside(target)
    sums: list[str] = []
    try:
        with _tar_writer(temp, compress=target.name.endswith(".zst")) as tar:
            files = [p for p in fs.walk_files(fs.root) if ".tmp-" not in p.name]
            files.sort(key=lambda p: (p.name != BUNDLE_FILE, str(p)))
            for path in files:
                name = path.relative_to(fs.root).as_posix()
                sums.append(f"{_add_file(tar, fs, path, name)}  {name}\n")
            _add_bytes(tar, SUMS_FILE, "".join(sums).encode())
        temp.rename(target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return len(files)


def _add_file(tar: tarfile.TarFile, fs: LocalRoot, path: Path, name: str) -> str:
    size = fs.stat_file(path) or 0
    with os.fdopen(fs.open_file(path), "rb") as f:
        reader = _HashingReader(f)
        tar.addfile(_info(name, size), reader)
    digest = f"sha256:{reader.sha256.hexdigest()}"
    promised = blob_digest_of(name)
    if promised is not None and promised != digest:
        raise IntegrityError(f"{path}: holds {digest}, not the blob its name promises")
    return digest.split(":", 1)[1]


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_info(name, len(data)), io.BytesIO(data))


@contextmanager
def _tar_reader(path: Path) -> Iterator[tarfile.TarFile]:
    with path.open("rb") as raw:
        if path.name.endswith(".zst"):
            with (
                zstandard.ZstdDecompressor().stream_reader(raw) as zst,
                tarfile.open(fileobj=zst, mode="r|") as tar,
            ):
                yield tar
        else:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                yield tar


def read_first_member(path: Path, name: str, cap: int) -> bytes | None:
    """The first member's bytes if it is called `name` (a packed bundle's description)."""
    try:
        with _tar_reader(path) as tar:
            info = tar.next()
            if info is None or info.name != name or not info.isreg() or info.size > cap:
                return None
            f = tar.extractfile(info)
            return None if f is None else f.read()
    except (tarfile.TarError, zstandard.ZstdError, OSError):
        return None


def unpack(archive: Path, target: Path) -> int:
    """Unpack a packed bundle into the new directory `target`, checking every file; returns
    the number of files. On any problem `target` is removed and the error raised."""
    target.mkdir(parents=False, exist_ok=False)
    try:
        return _unpack(archive, LocalRoot(target, durable=False))
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def _unpack(archive: Path, fs: LocalRoot) -> int:
    seen: dict[str, str] = {}
    sums: bytes | None = None
    try:
        with _tar_reader(archive) as tar:
            for info in tar:
                name = member_name(info.name, archive)
                if info.isdir():
                    continue
                if not info.isreg():
                    raise LocalStorageError(f"{archive}: member {name!r} is not a regular file")
                f = tar.extractfile(info)
                assert f is not None
                if name in seen or (name == SUMS_FILE and sums is not None):
                    raise LocalStorageError(f"{archive}: member {name!r} appears twice")
                if name == SUMS_FILE:
                    sums = f.read(64 * 1024 * 1024)
                    continue
                try:
                    seen[name] = _extract(fs, name, f, info.size)
                except IntegrityError as exc:
                    raise IntegrityError(f"{archive}: {name}: {exc}") from None
                except OSError as exc:  # a name too long for this file system, a full disk
                    reason = exc.strerror or str(exc)
                    raise LocalStorageError(f"{archive}: member {name[:200]!r}: {reason}") from None
    except (tarfile.TarError, zstandard.ZstdError) as exc:
        raise LocalStorageError(f"{archive}: not a readable packed bundle ({exc})") from None
    _check_sums(archive, seen, sums)
    return len(seen)


def _extract(fs: LocalRoot, name: str, f: IO[bytes], size: int) -> str:
    path = fs.path(*(check_component(p) for p in name.split("/")))
    promised = blob_digest_of(name)
    writer = fs.writer(path, promised or "sha256:", size)
    hasher = hashlib.sha256()
    try:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
            writer.write(chunk)
        writer.commit(check_digest=promised is not None)  # a blob must match its name
    except BaseException:
        writer.abort()
        raise
    return hasher.hexdigest()


def _check_sums(archive: Path, seen: dict[str, str], sums: bytes | None) -> None:
    if sums is None:
        raise IntegrityError(
            f"{archive}: no {SUMS_FILE}, which a packed bundle ends with (truncated? copy it again)"
        )
    expected: dict[str, str] = {}
    for line in sums.decode("utf-8", "replace").splitlines():
        checksum, sep, name = line.partition("  ")
        if not sep or not re.fullmatch(r"[0-9a-f]{64}", checksum):
            raise IntegrityError(f"{archive}: malformed {SUMS_FILE} line {line[:100]!r}")
        expected[name] = checksum
    if expected.keys() != seen.keys():
        missing = sorted(expected.keys() - seen.keys())[:3]
        extra = sorted(seen.keys() - expected.keys())[:3]
        raise IntegrityError(
            f"{archive}: files differ from {SUMS_FILE} (missing {missing}, unlisted {extra})"
        )
    bad = sorted(n for n in seen if seen[n] != expected[n])
    if bad:
        raise IntegrityError(f"{archive}: {len(bad)} file(s) do not match {SUMS_FILE}: {bad[:3]}")
