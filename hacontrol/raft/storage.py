"""Files that survive a power cut, behind a seam tests can replace.

Everything the replica keeps on disk goes through a `Files` object: the journal is an
append-only `LogFile`, the meta file and the dump are replaced whole (`replace`). `OsFiles`
is the real thing: a replacement is written to a temporary file, fsynced, renamed over the
old one and the directory fsynced, so after a power cut the file is either the old or the
new content, never a mix or nothing. Tests use an in-memory implementation that keeps what
was synced apart from what was merely written, and can drop the latter ("power loss").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class StorageError(Exception):
    """The replica's files are damaged, of an unknown format, or the disk failed.

    The replica must not serve after this: its state may be wrong, and after a failed
    fsync the kernel may already have dropped the data it could not write.
    """


class LogFile(Protocol):
    """An append-only file: written at the end, cut back, synced."""

    def size(self) -> int: ...

    def append(self, data: bytes) -> None: ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None:
        """Everything appended or cut so far is on stable storage when this returns."""

    def close(self) -> None: ...


class Files(Protocol):
    def read(self, path: Path) -> bytes | None:
        """The whole file, or None when there is none."""

    def replace(self, path: Path, data: bytes, durable: bool = True) -> None:
        """Make `path` hold `data`, atomically; on stable storage if `durable`."""

    def open_log(self, path: Path) -> LogFile:
        """Open an existing file for appending."""

    def remove(self, path: Path) -> None: ...


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that a rename or creation inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(src: Path, dst: Path, durable: bool = True) -> None:
    """Rename a fully written `src` over `dst`: fsync src, rename, fsync the directory."""
    if durable:
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(src, dst)
    if durable:
        fsync_dir(dst.parent)


class OsLogFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        self._size = os.fstat(self._fd).st_size

    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._size)
            self._size += n
            view = view[n:]

    def truncate(self, size: int) -> None:
        os.ftruncate(self._fd, size)
        self._size = size

    def sync(self) -> None:
        # fdatasync also writes the file size, which is all the metadata appends and
        # truncations change (fdatasync(2)).
        os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFiles:
    """The real file system."""

    def read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def replace(self, path: Path, data: bytes, durable: bool = True) -> None:
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)

    def open_log(self, path: Path) -> LogFile:
        return OsLogFile(path)

    def remove(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
