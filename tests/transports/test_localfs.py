"""The safe file layer under every local transport: no escape, no symlink, no partial file."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mirrord.errors import IntegrityError, LocalStorageError
from mirrord.manifests import Descriptor
from mirrord.transports.base import BlobOrigin, BlobOutcome, ManifestInfo
from mirrord.transports.localfs import LocalRoot
from mirrord.transports.placement import BlobPlacer

DATA = b"layer bytes " * 1000
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class BytesSource:
    """An image source whose blobs are bytes in memory (never a file to link)."""

    description = "bytes"
    origin: BlobOrigin | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def head(self, reference: str) -> ManifestInfo | None:
        return None

    async def manifest(self, reference: str) -> tuple[bytes, str]:
        raise NotImplementedError

    @asynccontextmanager
    async def blob(self, desc: Descriptor) -> AsyncIterator[AsyncIterator[bytes]]:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(self.data), 4096):
                yield self.data[i : i + 4096]

        yield chunks()


class FileSource(BytesSource):
    """A source that hands out a file under a LocalRoot (so it can be hard-linked)."""

    def __init__(self, fs: LocalRoot, path: Path) -> None:
        super().__init__(path.read_bytes())
        self.fs = fs
        self.path = path

    def blob_file(self, desc: Descriptor) -> Path:
        return self.path


@pytest.mark.parametrize("part", ["", ".", "..", "a/b", "x\0y"])
def test_unsafe_path_components_are_refused(tmp_path: Path, part: str) -> None:
    with pytest.raises(LocalStorageError, match="unsafe path component"):
        LocalRoot(tmp_path).path("blobs", part)


def test_a_symlinked_directory_is_never_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "blobs").symlink_to(outside)
    fs = LocalRoot(root)
    with pytest.raises(LocalStorageError, match="symlink"):
        fs.write_bytes(fs.path("blobs", "x"), b"data")
    with pytest.raises(LocalStorageError, match="symlink"):
        fs.read_file(fs.path("blobs", "x"), 100)
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_is_never_read_and_is_replaced_not_written_through(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("keep me")
    fs = LocalRoot(tmp_path / "root", create=True)
    (fs.root / "f").symlink_to(secret)
    with pytest.raises(LocalStorageError, match="refusing symlink"):
        fs.read_file(fs.path("f"), 100)
    fs.write_bytes(fs.path("f"), b"new")
    assert secret.read_text() == "keep me"
    assert not (fs.root / "f").is_symlink()
    assert (fs.root / "f").read_bytes() == b"new"


def test_writes_are_atomic_and_leave_no_temp_file(tmp_path: Path) -> None:
    fs = LocalRoot(tmp_path, durable=True)
    path = fs.path("a", "b", "c")
    fs.write_bytes(path, b"one")
    fs.write_bytes(path, b"two")
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["c"]


@pytest.mark.parametrize(
    ("data", "message"),
    [(DATA[:-1], "truncated"), (DATA + b"x", "more than"), (DATA[:-1] + b"X", "corrupt")],
)
def test_a_blob_that_does_not_match_never_lands(tmp_path: Path, data: bytes, message: str) -> None:
    fs = LocalRoot(tmp_path)
    desc = Descriptor("application/octet-stream", DIGEST, len(DATA))
    placer = BlobPlacer(fs)
    with pytest.raises(IntegrityError, match=message):
        asyncio.run(placer.place(fs.path("blob"), desc, BytesSource(data), lambda n: None))
    assert list(tmp_path.iterdir()) == []


def test_a_file_source_is_hard_linked(tmp_path: Path) -> None:
    pool = LocalRoot(tmp_path / "pool", create=True)
    pool.write_bytes(pool.path("blob"), DATA)
    fs = LocalRoot(tmp_path / "bundle", create=True)
    desc = Descriptor("application/octet-stream", DIGEST, len(DATA))
    source = FileSource(pool, pool.path("blob"))
    outcome = asyncio.run(BlobPlacer(fs).place(fs.path("b"), desc, source, lambda n: None))
    assert outcome is BlobOutcome.MOUNTED
    assert Path(fs.path("b")).stat().st_ino == Path(pool.path("blob")).stat().st_ino
    again = asyncio.run(BlobPlacer(fs).place(fs.path("b"), desc, source, lambda n: None))
    assert again is BlobOutcome.SKIPPED_HEAD


def test_without_hard_links_a_blob_is_copied_and_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(LocalRoot, "clone_file", lambda self, fd, path: False)
    pool = LocalRoot(tmp_path / "pool", create=True)
    pool.write_bytes(pool.path("blob"), DATA[:-1] + b"X")  # right size, wrong bytes
    fs = LocalRoot(tmp_path / "bundle", create=True)
    desc = Descriptor("application/octet-stream", DIGEST, len(DATA))
    source = FileSource(pool, pool.path("blob"))
    with pytest.raises(IntegrityError, match="corrupt"):
        asyncio.run(BlobPlacer(fs).place(fs.path("b"), desc, source, lambda n: None))
    assert list(fs.root.iterdir()) == []
    pool.write_bytes(pool.path("blob"), DATA)
    source = FileSource(pool, pool.path("blob"))
    outcome = asyncio.run(BlobPlacer(fs).place(fs.path("b"), desc, source, lambda n: None))
    assert outcome is BlobOutcome.UPLOADED
    assert fs.path("b").read_bytes() == DATA


def test_rehash_catches_a_same_size_corruption_before_linking(tmp_path: Path) -> None:
    pool = LocalRoot(tmp_path / "pool", create=True)
    pool.write_bytes(pool.path("blob"), DATA[:-1] + b"X")
    fs = LocalRoot(tmp_path / "bundle", create=True)
    desc = Descriptor("application/octet-stream", DIGEST, len(DATA))
    with pytest.raises(IntegrityError, match="expected"):
        asyncio.run(
            BlobPlacer(fs, rehash=True).place(
                fs.path("b"), desc, FileSource(pool, pool.path("blob")), lambda n: None
            )
        )
    assert list(fs.root.iterdir()) == []
