"""Safe file operations under one root directory, shared by every local transport.

Paths are built from components checked here (never empty, `.`, `..`, or holding `/` or NUL),
and callers take those components from digests, tags and repository names validated in
`mirrord.refs` (CVE-2024-3727: a digest is checked before it becomes a path). Nothing here
follows a symlink: a parent directory whose real path is not exactly the path we built is
refused, and final components are opened with O_NOFOLLOW. Writes are atomic: a temp file
created with O_EXCL in the target's own directory, written, renamed over the target. With
`durable` the file and then its directory are fsynced, as containers/image does; bundles
instead call `sync()` once at the end, before they write the file that marks them complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import itertools
import os
import re
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

from mirrord.errors import IntegrityError, LocalStorageError

CHUNK = 1 << 20
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# A hard link that fails for one of these reasons falls back to reflink, then to a copy.
_PID = os.getpid()
_TEMP_IDS = itertools.count()
_TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)-\d+")  # what _temp_name makes
_NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES})


def check_component(part: str) -> str:
    """`part` if it is one safe path component, else LocalStorageError."""
    if not part or part in (".", "..") or "/" in part or "\0" in part or len(part) > 255:
        raise LocalStorageError(f"refusing unsafe path component {part[:80]!r}")
    return part


class LocalRoot:
    """A directory that local transports read and write below, and never outside of."""

    def __init__(self, root: Path, *, create: bool = False, durable: bool = True) -> None:
        if create:
            root.mkdir(parents=True, exist_ok=True)
        if not root.is_dir():
            raise LocalStorageError(f"{root}: no such directory")
        # Empty when opened: every directory below is one this object makes (and caches), so
        # one it has not made does not exist, and need not be looked for. One planted meanwhile
        # still makes mkdir() fail, and is then checked like any other.
        self.fresh = create and _empty(root)
        self.root = Path(os.path.realpath(root))
        self._root_text = str(self.root)
        self._root_prefix = self._root_text.rstrip(os.sep) + os.sep
        self.durable = durable
        # Checked: real directories, no symlink on the way. Strings, not Paths: bundles check
        # thousands of directories and pathlib's parsing would dominate the run.
        self._dirs: set[str] = {self._root_text}

    def __repr__(self) -> str:
        return f"LocalRoot({str(self.root)!r})"

    def path(self, *parts: str) -> Path:
        """root/parts..., each part checked by `check_component`."""
        for part in parts:
            check_component(part)
        return Path(self._root_prefix + "/".join(parts))

    # -- checks ----------------------------------------------------------------------------

    def _inside(self, path: Path | str) -> None:
        # A string test: `root in path.parents` builds a Path per ancestor, per call.
        text = str(path)
        if text != self._root_text and not text.startswith(self._root_prefix):
            raise LocalStorageError(f"{path}: outside {self.root}")

    def _parent_ok(self, path: Path) -> bool:
        """True when path's parent exists as a real directory below the root; False when it
        does not exist; LocalStorageError when a symlink or a file stands in the way."""
        self._inside(path)
        return self._real_dir(_dirname(str(path)))

    def _real_dir(self, directory: str) -> bool:
        # Only the components below the nearest directory already checked are looked at, one
        # lstat each (realpath() would re-walk the whole path from / every time).
        if directory in self._dirs:
            return True
        if not directory.startswith(self._root_prefix):
            return True  # the root itself or above it: resolved by realpath() when opened
        if self.fresh or not self._real_dir(_dirname(directory)):
            return False
        try:
            mode = os.lstat(directory).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISLNK(mode):
            raise LocalStorageError(f"refusing to follow a symlink at {directory}")
        if not stat.S_ISDIR(mode):
            return False
        self._dirs.add(directory)
        return True

    def stat_file(self, path: Path) -> int | None:
        """Size of the regular file at `path`; None when absent; an error for anything else."""
        if not self._parent_ok(path):
            return None
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(st.st_mode):
            raise LocalStorageError(f"refusing symlink {path}")
        if not stat.S_ISREG(st.st_mode):
            raise LocalStorageError(f"{path}: not a regular file")
        return st.st_size

    def is_dir(self, path: Path) -> bool:
        """Whether `path` is a real directory (a symlink to one is refused)."""
        if not self._parent_ok(path):
            return False
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        if stat.S_ISLNK(st.st_mode):
            raise LocalStorageError(f"refusing symlink {path}")
        return stat.S_ISDIR(st.st_mode)

    def list_dir(self, path: Path) -> list[str]:
        """Names in directory `path`, sorted ([] when absent); symlinks in it are refused."""
        if not self.is_dir(path):
            return []
        self._dirs.add(str(path))
        names = []
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_symlink():
                    raise LocalStorageError(f"refusing symlink {path / entry.name}")
                names.append(entry.name)
        return sorted(names)

    # -- reading ---------------------------------------------------------------------------

    def open_file(self, path: Path) -> int:
        """A read-only descriptor for the regular file at `path` (never through a symlink)."""
        return self._open(path)[0]

    def _open(self, path: Path) -> tuple[int, int]:
        """(descriptor, size) of the regular file at `path`."""
        if not self._parent_ok(path):
            raise LocalStorageError(f"{path}: no such file")
        try:
            fd = os.open(path, _READ_FLAGS)
        except FileNotFoundError:
            raise LocalStorageError(f"{path}: no such file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise LocalStorageError(f"refusing symlink {path}") from None
            raise LocalStorageError(f"{path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise LocalStorageError(f"{path}: not a regular file")
        return fd, st.st_size

    def read_file(self, path: Path, cap: int) -> bytes | None:
        """The file's bytes (None when absent); LocalStorageError when larger than `cap`."""
        if not self._parent_ok(path):
            return None
        try:
            fd, expected = self._open(path)
        except LocalStorageError:
            if not os.path.lexists(path):
                return None
            raise
        # Raw reads, sized by fstat: a Python file object costs an fstat, an lseek and an
        # isatty ioctl more per file, and bundles read thousands of small ones.
        try:
            if expected > cap:
                raise LocalStorageError(f"{path}: larger than {cap} bytes")
            parts, size = [], 0
            while size < expected and (chunk := os.read(fd, min(CHUNK, cap + 1 - size))):
                parts.append(chunk)
                size += len(chunk)
                if size > cap:
                    raise LocalStorageError(f"{path}: larger than {cap} bytes")
        finally:
            os.close(fd)
        return b"".join(parts)

    @contextlib.asynccontextmanager
    async def chunks(self, path: Path, size: int) -> AsyncIterator[AsyncIterator[bytes]]:
        """Stream a file expected to hold `size` bytes (a short or long file is an error)."""
        f = os.fdopen(self.open_file(path), "rb", buffering=0)
        try:
            actual = os.fstat(f.fileno()).st_size
            if actual != size:
                raise IntegrityError(f"{path}: {actual} bytes, {size} expected (truncated?)")
            yield _read_chunks(f)
        finally:
            f.close()

    def hash_file(self, path: Path, algorithm: str = "sha256") -> tuple[str, int]:
        """(digest, size) of the file's bytes."""
        hasher, size = hashlib.new(algorithm), 0
        with os.fdopen(self.open_file(path), "rb", buffering=0) as f:
            while chunk := f.read(CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        return f"{algorithm}:{hasher.hexdigest()}", size

    # -- writing ---------------------------------------------------------------------------

    def makedirs(self, directory: Path | str) -> None:
        """Create `directory` and its parents below the root; refuse symlinks and files."""
        text = str(directory)
        if text in self._dirs:
            return
        self._inside(text)
        self._makedirs(text)

    def _makedirs(self, text: str) -> None:
        if text in self._dirs:
            return
        self._makedirs(_dirname(text))
        try:
            Path(text).mkdir(0o755)
        except FileExistsError:
            mode = os.lstat(text).st_mode
            if stat.S_ISLNK(mode):
                raise LocalStorageError(f"refusing to follow a symlink at {text}") from None
            if not stat.S_ISDIR(mode):
                raise LocalStorageError(f"{text}: exists and is not a directory") from None
        self._dirs.add(text)

    def _temp_name(self, path: Path) -> Path:
        # O_EXCL|O_NOFOLLOW make any name safe; a counter avoids a getrandom() per file.
        return path.parent / f".{path.name[:200]}.tmp-{_PID}-{next(_TEMP_IDS)}"

    def _temp(self, path: Path) -> tuple[Path, int]:
        self.makedirs(path.parent)
        while True:
            temp = self._temp_name(path)
            try:
                return temp, os.open(temp, _TEMP_FLAGS, 0o644)
            except FileExistsError:
                continue  # left by an earlier process with our pid: take the next name

    def _commit(self, temp: Path, path: Path) -> None:
        # rename() replaces a symlink planted at `path` itself; it never writes through one.
        temp.rename(path)
        if self.durable:
            self.sync_dir(path.parent)

    def write_bytes(self, path: Path, data: bytes) -> None:
        """Atomically replace `path` with `data`."""
        temp, fd = self._temp(path)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            self._commit(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise

    def link_file(self, source: Path, path: Path) -> bool:
        """Hard-link `source` (a checked, complete file) to `path`; False when links are
        impossible here. A new name is linked in place, which is atomic already (the name
        appears with all its bytes or not at all); an existing one is replaced by rename."""
        self.makedirs(path.parent)
        try:
            os.link(source, path, follow_symlinks=False)
        except FileExistsError:
            return self._relink(source, path)
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return False
            raise LocalStorageError(f"linking {source} to {path}: {exc.strerror}") from None
        if self.durable:
            self.sync_dir(path.parent)
        return True

    def _relink(self, source: Path, path: Path) -> bool:
        temp = self._temp_name(path)
        try:
            os.link(source, temp, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _NO_LINK:
                return False
            raise LocalStorageError(f"linking {source} to {path}: {exc.strerror}") from None
        try:
            self._commit(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise
        return True

    def clone_file(self, source_fd: int, path: Path) -> bool:
        """Reflink (copy-on-write clone) into `path`; False when the filesystem cannot."""
        temp, fd = self._temp(path)
        try:
            fcntl.ioctl(fd, FICLONE, source_fd)
            if self.durable:
                os.fsync(fd)
        except OSError:
            os.close(fd)
            _unlink_quietly(temp)
            return False
        os.close(fd)
        try:
            self._commit(temp, path)
        except BaseException:
            _unlink_quietly(temp)
            raise
        return True

    def writer(self, path: Path, digest: str, size: int) -> VerifyingWriter:
        """A temp file that becomes `path` only if its bytes match `digest` and `size`."""
        temp, fd = self._temp(path)
        return VerifyingWriter(self, temp, path, os.fdopen(fd, "wb"), digest, size)

    def remove(self, path: Path) -> None:
        """Delete the file at `path` if it exists (unlink never follows a symlink)."""
        self._inside(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def sync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """Make everything written below the root durable (one syncfs for the filesystem)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if _syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)

    def remove_stale_temps(self) -> int:
        """Remove the temp files that writers which are gone left below the root (an export
        killed mid-write); a live process's are kept. Returns how many were removed."""
        removed = 0
        for path in self.walk_files(self.root):
            match = _TEMP_NAME.fullmatch(path.name)
            if match and not process_alive(int(match[1])):
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def walk_files(self, directory: Path) -> Iterator[Path]:
        """Every regular file below `directory` (depth first, sorted); symlinks are refused."""
        for name in self.list_dir(directory):
            path = directory / name
            if self.is_dir(path):
                yield from self.walk_files(path)
            else:
                self.stat_file(path)  # refuses devices, sockets, ...
                yield path


class VerifyingWriter:
    """Writes a blob to a temp file, hashing as it goes; `commit()` renames it into place only
    when the size and digest match, so a corrupt or short source never lands under its name."""

    def __init__(
        self,
        fs: LocalRoot,
        temp: Path,
        path: Path,
        f: BinaryIO,
        digest: str,
        size: int,
    ) -> None:
        self._fs, self._temp, self._path = fs, temp, path
        self._file = f
        self._digest, self._size = digest, size
        self._hasher = hashlib.new(digest.split(":", 1)[0])
        self._written = 0

    def write(self, chunk: bytes) -> None:
        self._written += len(chunk)
        if self._written > self._size:
            raise IntegrityError(f"blob {self._digest}: more than the {self._size} bytes declared")
        self._hasher.update(chunk)
        self._file.write(chunk)

    def commit(self, *, check_digest: bool = True) -> None:
        """Rename into place if the bytes match (without `check_digest`: the size only)."""
        algorithm = self._digest.split(":", 1)[0]
        actual = f"{algorithm}:{self._hasher.hexdigest()}"
        if self._written != self._size:
            raise IntegrityError(
                f"{self._path.name}: {self._written} bytes, {self._size} declared (truncated?)"
            )
        if check_digest and actual != self._digest:
            raise IntegrityError(f"blob {self._digest}: content digest is {actual} (corrupt)")
        if self._fs.durable:
            self._file.flush()
            os.fsync(self._file.fileno())
        self._file.close()
        self._fs._commit(self._temp, self._path)

    def abort(self) -> None:
        self._file.close()
        _unlink_quietly(self._temp)


async def _read_chunks(f: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(f.read, CHUNK):
        yield chunk


def _empty(directory: Path) -> bool:
    with os.scandir(directory) as entries:
        return next(entries, None) is None


def _dirname(path: str) -> str:
    """The parent of an absolute path, as a string (pathlib would parse it again)."""
    return path.rpartition("/")[0] or "/"


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _syncfs(fd: int) -> int:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        result: int = libc.syncfs(fd)
    except (OSError, AttributeError):
        return -1
    return result


def temp_beside(target: Path, kind: str = "tmp") -> Path:
    """A fresh name for a temp file (or staging directory) a writer of `target` uses until it
    is complete: `.NAME.KIND-PID-HEX` in the same directory, so remove_stale_temps_beside() can
    tell whether its writer is still running."""
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale_temps_beside(target: Path, kind: str = "tmp") -> int:
    """Remove the temp files or directories of `target` (named by temp_beside) whose writer is
    gone, such as an archive or a pack killed mid-write; a live process's are kept. Returns
    how many."""
    stale = re.compile(rf"\.{re.escape(target.name)}\.{re.escape(kind)}-(\d+)-[0-9a-f]+")
    removed = 0
    for path in target.parent.iterdir():
        if (match := stale.fullmatch(path.name)) and not process_alive(int(match[1])):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether another process `pid` exists (whether its temp files may still be written)."""
    if pid == _PID:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
