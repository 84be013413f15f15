"""The power-loss model without FUSE: a `Store` rebuilt from its backing dir keeps only the synced."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.lazyfs.store import PAGE, Store


def _cut(store: Store) -> Store:
    """A power cut: the volatile view is lost, a new one starts from the backing dir."""
    store.close()
    return Store(store.backing)


def _read(store: Store, path: str) -> bytes:
    node = store.lookup(path)
    return store.read(node, node.size + PAGE, 0)


def test_only_synced_writes_survive(tmp_path: Path) -> None:
    s = Store(tmp_path)
    f = s.create("/a", 0o644)
    s.fsync_dir(s.root)
    s.write(f, b"synced", 0)
    s.fsync(f)
    s.write(f, b"-lost", 6)
    assert _read(s, "/a") == b"synced-lost"
    assert s.unsynced()["dirty_pages"] == 1
    s = _cut(s)
    assert _read(s, "/a") == b"synced"


def test_unsynced_creation_and_rename_are_lost(tmp_path: Path) -> None:
    s = Store(tmp_path)
    old = s.create("/meta", 0o644)
    s.write(old, b"v1", 0)
    s.fsync(old)
    s.fsync_dir(s.root)
    tmp = s.create("/meta.tmp", 0o644)
    s.write(tmp, b"v2", 0)
    s.fsync(tmp)  # contents synced, but the rename never is
    s.rename("/meta.tmp", "/meta")
    s.create("/never", 0o644)
    assert _read(s, "/meta") == b"v2"
    s = _cut(s)
    assert _read(s, "/meta") == b"v1"
    with pytest.raises(FileNotFoundError):
        s.lookup("/never")
    with pytest.raises(FileNotFoundError):
        s.lookup("/meta.tmp")
    # The orphaned inode of meta.tmp is collected at the rebuild.
    assert sorted(p.name for p in s.inodes.iterdir()) == [str(s.lookup("/meta").ino)]


def test_rename_then_directory_fsync_survives(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.mkdir("/d", 0o755)
    s.fsync_dir(s.root)
    tmp = s.create("/d/meta.tmp", 0o644)
    s.write(tmp, b"v2", 0)
    s.fsync(tmp)
    s.rename("/d/meta.tmp", "/d/meta")
    s.fsync_dir(s.lookup("/d"))
    s = _cut(s)
    assert _read(s, "/d/meta") == b"v2"
    assert list(s.lookup("/d").children) == ["meta"]


def test_truncate_then_extend_reads_zeros_and_syncs_the_size(tmp_path: Path) -> None:
    s = Store(tmp_path)
    f = s.create("/j", 0o644)
    s.fsync_dir(s.root)
    s.write(f, b"x" * (3 * PAGE), 0)
    s.fsync(f)
    s.truncate(f, PAGE + 10)
    s.truncate(f, 3 * PAGE)
    data = _read(s, "/j")
    assert data[: PAGE + 10] == b"x" * (PAGE + 10)
    assert data[PAGE + 10:] == bytes(2 * PAGE - 10)
    s = _cut(s)
    assert _read(s, "/j") == b"x" * (3 * PAGE)  # the truncates were never synced
    f = s.lookup("/j")
    s.truncate(f, 5)
    s.fsync(f)
    s = _cut(s)
    assert _read(s, "/j") == b"xxxxx"


def test_writes_across_pages_and_partial_syncs(tmp_path: Path) -> None:
    s = Store(tmp_path)
    a = s.create("/a", 0o644)
    b = s.create("/b", 0o644)
    s.fsync_dir(s.root)
    blob = bytes(range(256)) * 40  # 10240 bytes, three pages
    s.write(a, blob, 100)
    s.write(b, b"unsynced", 0)
    s.fsync(a)
    s = _cut(s)
    assert _read(s, "/a") == bytes(100) + blob
    assert _read(s, "/b") == b""


def test_sync_all_is_a_clean_shutdown(tmp_path: Path) -> None:
    s = Store(tmp_path)
    s.mkdir("/d", 0o755)
    f = s.create("/d/f", 0o644)
    s.write(f, b"kept", 0)
    s.sync_all()
    assert s.unsynced() == {"dirty_pages": 0, "unsynced_dirs": 0}
    s = _cut(s)
    assert _read(s, "/d/f") == b"kept"
