"""The state of a power-loss filesystem: what a process sees, and what a power cut keeps.

A `Store` is a tree of `Node`s (the namespace processes see) over a backing directory that
holds only what was made durable:

    BACKING/inodes/<ino>   the synced contents of one file
    BACKING/tree.json      the durable namespace: for each directory inode, its synced
                           entries {name: [ino, "f"|"d", mode]}
    BACKING/sync-stall     present while the disk is stalled: fsyncs wait for it to go

Writes land in memory as dirty pages over the synced contents. `fsync` (or `fdatasync`) of
a file writes its dirty pages, and its size, to `inodes/<ino>` and fdatasyncs it. `fsync` of a
directory makes its current entries durable (creations, renames in or out, unlinks). Nothing
else ever reaches the backing directory, so a power cut is simply the loss of this object:
`Store(backing)` rebuilt from the backing directory sees exactly what was synced. That is
stricter than ext4 (where an fsync of a new file in practice also commits its name) and
exactly what POSIX promises.

Thread-safe: every public method takes one lock (libfuse calls in from several threads).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
ROOT = 1
TREE = "tree.json"
STALL = "sync-stall"  # while this file exists in the backing dir, syncs wait (see fs.py)


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass
class Node:
    ino: int
    is_dir: bool
    mode: int
    # Files: the current size, dirty pages (page number -> PAGE bytes), and the offset from
    # which the backing contents no longer count (set by a truncate not yet synced).
    size: int = 0
    dirty: dict[int, bytearray] = field(default_factory=dict)
    zero_from: int | None = None
    synced_size: int = 0
    # Directories: name -> child.
    children: dict[str, Node] = field(default_factory=dict)
    mtime_ns: int = field(default_factory=time.time_ns)
    fd: int | None = None  # the backing file, opened on first use


class Store:
    """The volatile view over a backing directory; see the module docstring."""

    def __init__(self, backing: Path) -> None:
        self.backing = backing
        self.inodes = backing / "inodes"
        self.inodes.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._durable: dict[int, dict[str, list[object]]] = {}
        tree = backing / TREE
        if tree.exists():
            raw = json.loads(tree.read_text())
            self._durable = {int(k): v for k, v in raw["dirs"].items()}
        self.root = Node(ROOT, True, stat.S_IFDIR | 0o755)
        self._next_ino = ROOT + 1
        seen = {ROOT}
        self._build(self.root, seen)
        self._durable = {k: v for k, v in self._durable.items() if k in seen}
        # Inodes no durable name reaches died with the power cut.
        for f in self.inodes.iterdir():
            if f.name.isdigit() and int(f.name) not in seen:
                f.unlink()
            elif f.name.isdigit():
                self._next_ino = max(self._next_ino, int(f.name) + 1)
        self._next_ino = max([self._next_ino, *(i + 1 for i in seen)])

    def _build(self, d: Node, seen: set[int]) -> None:
        for name, (ino, kind, mode) in self._durable.get(d.ino, {}).items():
            assert isinstance(ino, int) and isinstance(mode, int)
            seen.add(ino)
            if kind == "d":
                child = Node(ino, True, mode)
                self._build(child, seen)
            else:
                path = self.inodes / str(ino)
                size = path.stat().st_size if path.exists() else 0
                child = Node(ino, False, mode, size=size, synced_size=size)
            d.children[name] = child

    # ------------------------------------------------------------------ lookup

    def lookup(self, path: str) -> Node:
        with self._lock:
            node = self.root
            for part in (p for p in path.split("/") if p):
                if not node.is_dir:
                    raise _err(errno.ENOTDIR)
                try:
                    node = node.children[part]
                except KeyError:
                    raise _err(errno.ENOENT) from None
            return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        if not name:
            raise _err(errno.EINVAL)
        parent = self.lookup(head or "/")
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        return parent, name

    def _new(self, is_dir: bool, mode: int) -> Node:
        ino = self._next_ino
        self._next_ino += 1
        return Node(ino, is_dir, mode)

    # -------------------------------------------------------------- namespace

    def create(self, path: str, mode: int) -> Node:
        with self._lock:
            parent, name = self._parent(path)
            if name in parent.children:
                raise _err(errno.EEXIST)
            node = parent.children[name] = self._new(False, stat.S_IFREG | (mode & 0o7777))
            parent.mtime_ns = time.time_ns()
            return node

    def mkdir(self, path: str, mode: int) -> Node:
        with self._lock:
            parent, name = self._parent(path)
            if name in parent.children:
                raise _err(errno.EEXIST)
            node = parent.children[name] = self._new(True, stat.S_IFDIR | (mode & 0o7777))
            parent.mtime_ns = time.time_ns()
            return node

    def unlink(self, path: str) -> None:
        with self._lock:
            parent, name = self._parent(path)
            node = parent.children.get(name)
            if node is None:
                raise _err(errno.ENOENT)
            if node.is_dir:
                raise _err(errno.EISDIR)
            del parent.children[name]
            parent.mtime_ns = time.time_ns()

    def rmdir(self, path: str) -> None:
        with self._lock:
            parent, name = self._parent(path)
            node = parent.children.get(name)
            if node is None:
                raise _err(errno.ENOENT)
            if not node.is_dir:
                raise _err(errno.ENOTDIR)
            if node.children:
                raise _err(errno.ENOTEMPTY)
            del parent.children[name]

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            src_dir, src_name = self._parent(old)
            dst_dir, dst_name = self._parent(new)
            node = src_dir.children.get(src_name)
            if node is None:
                raise _err(errno.ENOENT)
            target = dst_dir.children.get(dst_name)
            if target is node:
                return
            if target is not None:
                if target.is_dir and not node.is_dir:
                    raise _err(errno.EISDIR)
                if node.is_dir and not target.is_dir:
                    raise _err(errno.ENOTDIR)
                if target.is_dir and target.children:
                    raise _err(errno.ENOTEMPTY)
            del src_dir.children[src_name]
            dst_dir.children[dst_name] = node
            src_dir.mtime_ns = dst_dir.mtime_ns = time.time_ns()

    def fsync_dir(self, node: Node) -> None:
        """Make the directory's current entries durable (not its children's contents)."""
        with self._lock:
            self._durable[node.ino] = {name: [c.ino, "d" if c.is_dir else "f", c.mode]
                                       for name, c in node.children.items()}
            tmp = self.backing / (TREE + ".tmp")
            with tmp.open("w") as f:
                json.dump({"dirs": {str(k): v for k, v in self._durable.items()}}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.backing / TREE)
            dfd = os.open(self.backing, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    # --------------------------------------------------------------- contents

    def _fd(self, node: Node) -> int:
        if node.fd is None:
            node.fd = os.open(self.inodes / str(node.ino), os.O_RDWR | os.O_CREAT, 0o600)
        return node.fd

    def _page(self, node: Node, n: int) -> bytes:
        """Page n as a reader sees it now (without regard to the current size)."""
        page = node.dirty.get(n)
        if page is not None:
            return bytes(page)
        start = n * PAGE
        if start >= node.synced_size or (node.zero_from is not None
                                         and start >= node.zero_from):
            return bytes(PAGE)
        data = os.pread(self._fd(node), PAGE, start)
        if node.zero_from is not None and node.zero_from < start + PAGE:
            data = data[: node.zero_from - start]
        return data.ljust(PAGE, b"\0")

    def read(self, node: Node, size: int, offset: int) -> bytes:
        with self._lock:
            end = min(offset + size, node.size)
            out = bytearray()
            pos = offset
            while pos < end:
                n, within = divmod(pos, PAGE)
                take = min(PAGE - within, end - pos)
                out += self._page(node, n)[within:within + take]
                pos += take
            return bytes(out)

    def write(self, node: Node, data: bytes, offset: int) -> int:
        with self._lock:
            pos = 0
            while pos < len(data):
                n, within = divmod(offset + pos, PAGE)
                take = min(PAGE - within, len(data) - pos)
                page = node.dirty.get(n)
                if page is None:
                    page = node.dirty[n] = bytearray(self._page(node, n))
                page[within:within + take] = data[pos:pos + take]
                pos += take
            node.size = max(node.size, offset + len(data))
            node.mtime_ns = time.time_ns()
            return len(data)

    def truncate(self, node: Node, length: int) -> None:
        with self._lock:
            if node.is_dir:
                raise _err(errno.EISDIR)
            if length < node.size:
                last, within = divmod(length, PAGE)
                for n in [n for n in node.dirty if n > last or (n == last and within == 0)]:
                    del node.dirty[n]
                page = node.dirty.get(last)
                if page is not None:
                    page[within:] = bytes(PAGE - within)
                if length < node.synced_size:
                    node.zero_from = length if node.zero_from is None else min(node.zero_from,
                                                                               length)
            node.size = length
            node.mtime_ns = time.time_ns()

    def fsync(self, node: Node) -> None:
        """Make the file's contents and size durable (its name needs a directory fsync)."""
        with self._lock:
            if node.is_dir:
                self.fsync_dir(node)
                return
            fd = self._fd(node)
            if node.zero_from is not None:
                os.ftruncate(fd, node.zero_from)
            for n, page in sorted(node.dirty.items()):
                start = n * PAGE
                if start < node.size:
                    os.pwrite(fd, bytes(page[: node.size - start]), start)
            os.ftruncate(fd, node.size)
            os.fdatasync(fd)
            node.dirty.clear()
            node.zero_from = None
            node.synced_size = node.size

    def unsynced(self) -> dict[str, int]:
        """How much a power cut would lose now: dirty pages, and directories out of sync."""
        with self._lock:
            pages = 0
            dirs = 0
            stack = [self.root]
            while stack:
                d = stack.pop()
                current = {name: [c.ino, "d" if c.is_dir else "f", c.mode]
                           for name, c in d.children.items()}
                dirs += current != self._durable.get(d.ino, {})
                for c in d.children.values():
                    if c.is_dir:
                        stack.append(c)
                    else:
                        pages += len(c.dirty)
            return {"dirty_pages": pages, "unsynced_dirs": dirs}

    def sync_all(self) -> None:
        """A clean shutdown: everything becomes durable, as `sync` would make it."""
        with self._lock:
            stack = [self.root]
            while stack:
                d = stack.pop()
                for c in d.children.values():
                    if c.is_dir:
                        stack.append(c)
                    else:
                        self.fsync(c)
                self.fsync_dir(d)

    def close(self) -> None:
        with self._lock:
            stack = [self.root]
            while stack:
                d = stack.pop()
                for c in d.children.values():
                    if c.is_dir:
                        stack.append(c)
                    elif c.fd is not None:
                        os.close(c.fd)
                        c.fd = None
