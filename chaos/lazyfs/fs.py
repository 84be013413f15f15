"""The FUSE side of the power-loss filesystem: libfuse3 operations over a `Store`.

Run as its own process (`python -m chaos.lazyfs BACKING MOUNTPOINT`), so a power cut is a
SIGKILL of that process: the kernel aborts the connection and drops its own dirty pages of
the mount, and the writes the process held in memory die with it. Remounting starts a fresh
process on the backing directory, which holds only what was synced.

No `direct_io`: the page cache stays on, so shared writable mmaps work (their dirty pages
reach us as writes on msync, munmap or writeback).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import mfusepy  # type: ignore[import-untyped]

from .store import STALL, Node, Store


class PowerLossOps(mfusepy.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, store: Store) -> None:
        self.store = store
        self._handles: dict[int, Node] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _open(self, node: Node) -> int:
        with self._lock:
            fh = next(self._ids)
            self._handles[fh] = node
            return fh

    def _node(self, path: str | None, fh: int | None) -> Node:
        # An open handle outlives renames and unlinks of its path.
        if fh:
            node = self._handles.get(fh)
            if node is not None:
                return node
        if path is None:
            raise OSError(errno.EBADF, "no such handle")
        return self.store.lookup(path)

    # ------------------------------------------------------------- metadata

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        t = node.mtime_ns
        size = 4096 if node.is_dir else node.size
        return {"st_mode": node.mode, "st_ino": node.ino,
                "st_nlink": 2 + sum(c.is_dir for c in node.children.values())
                if node.is_dir else 1,
                "st_size": size, "st_blocks": (size + 511) // 512,
                "st_uid": os.getuid(), "st_gid": os.getgid(),
                "st_atime": t, "st_mtime": t, "st_ctime": t}

    def readdir(self, path: str, fh: int) -> list[str]:
        node = self.store.lookup(path)
        return [".", "..", *node.children]

    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        node = self._node(path, fh)
        node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        return 0

    def chown(self, path: str, uid: int, gid: int, fh: int | None = None) -> int:
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None,
                fh: int | None = None) -> int:
        node = self._node(path, fh)
        node.mtime_ns = times[1] if times else node.mtime_ns
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.store.backing)
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}

    # ------------------------------------------------------------ namespace

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return self._open(self.store.create(path, mode))

    def mkdir(self, path: str, mode: int) -> int:
        self.store.mkdir(path, mode)
        return 0

    def unlink(self, path: str) -> int:
        self.store.unlink(path)
        return 0

    def rmdir(self, path: str) -> int:
        self.store.rmdir(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        self.store.rename(old, new)
        return 0

    def link(self, target: str, source: str) -> int:
        raise OSError(errno.EPERM, "hard links are not modelled")

    def symlink(self, target: str, source: str) -> int:
        raise OSError(errno.EPERM, "symlinks are not modelled")

    # ------------------------------------------------------------- contents

    def open(self, path: str, flags: int) -> int:
        node = self.store.lookup(path)
        if node.is_dir:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if flags & os.O_TRUNC:
            self.store.truncate(node, 0)
        return self._open(node)

    def opendir(self, path: str) -> int:
        return self._open(self.store.lookup(path))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return self.store.read(self._node(path, fh), size, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        return self.store.write(self._node(path, fh), bytes(data), offset)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.store.truncate(self._node(path, fh), length)
        return 0

    def flush(self, path: str, fh: int) -> int:
        return 0  # close() promises nothing about durability

    def _wait_while_stalled(self) -> None:
        # A stalled disk: syncs wait (writes and reads go on) until the stall is lifted, or
        # the power is cut (this process is killed, the caller with it).
        while (self.store.backing / STALL).exists():
            time.sleep(0.005)

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        node = self._node(path, fh)
        self._wait_while_stalled()
        self.store.fsync(node)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        # Implemented on purpose: without it the kernel answers fsync(dirfd) with success.
        node = self._node(path, fh)
        self._wait_while_stalled()
        self.store.fsync_dir(node)
        return 0

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._handles.pop(fh, None)
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return self.release(path, fh)

    def destroy(self, path: str) -> None:
        # A clean unmount is a clean shutdown: everything reaches the disk.
        self.store.sync_all()
        self.store.close()


def serve(backing: str, mountpoint: str, debug: bool = False) -> None:
    """Mount in the foreground until unmounted (or killed: a power cut)."""
    store = Store(Path(backing))
    mfusepy.FUSE(PowerLossOps(store), mountpoint, foreground=True, debug=debug,
                 fsname="hacontrol-powerloss", default_permissions=True)
