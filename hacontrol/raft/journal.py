"""The Raft log and the term/vote record, on disk, behind pysyncobj's journal interface.

pysyncobj calls `add` for every entry (leader: new commands; follower: received entries)
and `setCurrentTerm` when the term or vote changes. Here:

* `add` only encodes the record into a buffer; nothing touches the disk. `sync` writes
  everything buffered with one write and one fdatasync: group commit. A follower calls
  it before its success replies go out (see node.py). The leader does not wait for it:
  its own sync thread (`start_sync_thread`, `request_sync`) writes and fdatasyncs while
  the entries travel to the followers, and `durable_index` tells the node how far the
  leader may count itself toward a commit quorum (docs/durability.md).
* `setCurrentTerm` writes the meta file durably before returning, so pysyncobj's
  following `send` of a vote or of a new-term message happens only after it is on disk.
* Truncations (a conflicting suffix, a cleared log) are on disk before anything is
  appended after them, so a later torn append can never expose records that were cut.
* Compaction (`deleteEntriesTo`) rewrites the file: temporary file, fsync, rename,
  directory fsync.
* Opening cuts a torn tail off (logged) and raises StorageError on any other damage.

Any I/O failure is sticky (`error`): after a failed fsync the kernel may have dropped the
pages it could not write, so retrying would only pretend the data is safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack

from hacontrol.raft import records
from hacontrol.raft.config import Durability
from hacontrol.raft.records import Entry
from hacontrol.raft.storage import Files, LogFile, OsFiles, StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

META_MAGIC = b"HCRAFTM\x01"


class SyncedJournal(Protocol):
    """What the node needs beyond pysyncobj's journal interface."""

    error: str | None
    truncations: int  # bumped by every cut of the log's end
    background: bool  # a sync thread makes entries durable; the tick thread only asks

    def sync(self) -> bool: ...

    def request_sync(self) -> None: ...

    @property
    def durable_index(self) -> int: ...


@dataclass
class Meta:
    term: int = 0
    voted_for: str | None = None
    commit_index: int = 1

    def encode(self) -> bytes:
        body = msgpack.packb({"term": self.term, "voted_for": self.voted_for,
                              "commit_index": self.commit_index})
        return META_MAGIC + records.encode(body, 0, 0)


def decode_meta(data: bytes, name: str) -> Meta:
    if not data.startswith(META_MAGIC):
        raise StorageError(f"{name}: not a hacontrol raft meta file (pysyncobj's own format?)")
    got = records.scan(records.FILE_MAGIC + data[len(META_MAGIC):], name)
    if len(got.entries) != 1 or got.torn:
        raise StorageError(f"{name}: damaged meta file ({got.torn or 'no record'})")
    doc = msgpack.unpackb(got.entries[0][0], raw=False)
    try:
        voted = doc["voted_for"]
        return Meta(int(doc["term"]), None if voted is None else str(voted),
                    int(doc["commit_index"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise StorageError(f"{name}: meta file without {exc}") from None


def read_entries(path: Path, files: Files | None = None) -> list[Entry]:
    """The intact entries of a journal file, (command, index, term), without changing it.

    For checkers that compare replicas' logs; raises StorageError on damage before the tail.
    """
    data = (files or OsFiles()).read(path)
    if data is None:
        return []
    return records.scan(data, str(path)).entries


def first_mismatch(a: list[Entry], b: list[Entry]) -> int | None:
    """The lowest index both logs hold with a different term or command (Raft's Log
    Matching property says there is none), or None."""
    theirs = {e[1]: e for e in b}
    for entry in a:
        other = theirs.get(entry[1])
        if other is not None and (other[2], bytes(other[0])) != (entry[2], bytes(entry[0])):
            return entry[1]
    return None


class DurableJournal:
    """pysyncobj's `Journal` interface over an append-only, checksummed file."""

    def __init__(self, path: Path, meta_path: Path, durability: Durability,
                 files: Files | None = None) -> None:
        self.path = path
        self.meta_path = meta_path
        self.durability = durability
        self.files: Files = files or OsFiles()
        self.error: str | None = None
        self.truncations = 0
        self.background = False
        # `_io` serialises everything that touches the log file (the sync thread holds it
        # across its write and fdatasync); `_buf` guards the buffer and the counters below
        # and is never held across I/O, so `add` on the tick thread never waits for a disk.
        # Order: `_io` before `_buf`.
        self._io_lock = threading.Lock()
        self._buf = threading.Lock()
        self._pending = bytearray()
        self._pending_last = 0  # index of the last entry in `_pending`
        # File size once `_pending` is appended (bytes taken by an in-flight write count).
        self._written = records.HEADER_SIZE
        self._durable = 0  # every entry up to this index is on stable storage
        self._meta_dirty = False
        self._wanted = threading.Condition(threading.Lock())
        self._sync_requested = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._on_durable: Callable[[], None] = lambda: None
        self._open()

    # ---- opening -------------------------------------------------------------

    def _open(self) -> None:
        files = self.files
        durability = self.durability
        data = files.read(self.path)
        meta_data = files.read(self.meta_path)
        if data is not None and len(data) < records.HEADER_SIZE \
                and records.FILE_MAGIC.startswith(data):
            data = None  # torn while being created: nothing was ever written to it
        if data is not None:
            records.check_header(data, str(self.path))
        if meta_data is None:
            if data is not None and self.durability.fsync_meta:
                raise StorageError(f"{self.meta_path} is missing but the journal exists: "
                                   "term and vote are lost; refusing to start")
            self.meta = Meta()
            files.replace(self.meta_path, self.meta.encode())
        else:
            try:
                self.meta = decode_meta(meta_data, str(self.meta_path))
            except StorageError as exc:
                if self.durability.fsync_meta:
                    raise
                # Without fsync a power cut can leave the renamed file empty; pysyncobj
                # then starts from term 0 with no vote, which is what this fault shows.
                logger.warning("%s; starting from term 0 (meta fsync is off)", exc)
                self.meta = Meta()
        if data is None:
            files.replace(self.path, records.FILE_MAGIC)
            data = records.FILE_MAGIC
        got = records.scan(data, str(self.path))
        self.entries: list[Entry] = got.entries
        self._offsets = got.offsets
        self._log: LogFile = files.open_log(self.path)
        if got.torn is not None:
            logger.warning("%s: cutting off a torn tail (%s); the last intact entry is %s",
                           self.path, got.torn,
                           got.entries[-1][1] if got.entries else "none")
            self._log.truncate(got.end)
            self._log.sync()
        elif got.entries and durability.fsync_journal:
            # What a killed process wrote may still sit in the page cache only: make it
            # durable before counting it as such (one fdatasync per start).
            self._log.sync()
        self._written = got.end
        self._durable = self._pending_last = got.entries[-1][1] if got.entries else 0

    # ---- the durability points ----------------------------------------------------

    def _io(self, what: str, fn: Callable[[], T]) -> T:
        if self.error is not None:
            raise StorageError(self.error)
        try:
            return fn()
        except OSError as exc:
            self.error = f"{what} failed on {self.path}: {exc}"
            logger.critical("%s; the replica stops", self.error)
            raise StorageError(self.error) from exc

    def sync(self) -> bool:
        """Put every entry added so far on stable storage: one write, one fdatasync.
        False when there was nothing to write.

        Any thread; waits for a write the sync thread has in flight."""
        if self.error is not None:
            raise StorageError(self.error)
        with self._io_lock:
            with self._buf:
                if not self._pending:
                    return False
                data = bytes(self._pending)
                last = self._pending_last
                self._pending.clear()

            def write() -> None:
                self._log.append(data)
                if self.durability.fsync_journal:
                    self._log.sync()

            try:
                self._io("journal write", write)
            finally:
                # Counted even when it failed: the journal is dead then (`error`), and the
                # offsets of later `add`s must stay consistent with the bytes handed out.
                with self._buf:
                    self._written += len(data)
            with self._buf:
                self._durable = max(self._durable, last)
        return True

    @property
    def durable_index(self) -> int:
        return self._durable

    # ---- the leader's sync thread ---------------------------------------------------

    def start_sync_thread(self, on_durable: Callable[[], None]) -> None:
        """From now on `request_sync` has a thread sync; `on_durable` runs on it after
        each sync (and after a failure) to wake whoever counts `durable_index`."""
        self._on_durable = on_durable
        self.background = True
        self._thread = threading.Thread(target=self._sync_loop, name="raft-journal-sync",
                                        daemon=True)
        self._thread.start()

    def request_sync(self) -> None:
        """Ask the sync thread to sync what is buffered; returns at once. Without a
        thread nothing happens until someone calls `sync`.

        Nothing buffered, nothing asked: the tick thread asks on every tick, and each
        round of the sync thread wakes the tick thread again, so asking for nothing kept
        an idle leader ticking without pause (60 % of a core, and the event loop waiting
        for the GIL). Entries are added on the tick thread that asks, so what it sees
        buffered here is all there is."""
        if not self._pending:
            return
        with self._wanted:
            self._sync_requested = True
            self._wanted.notify()

    def _sync_loop(self) -> None:
        while True:
            with self._wanted:
                while not self._sync_requested and not self._closing:
                    self._wanted.wait()
                if self._closing:
                    return
                self._sync_requested = False
            try:
                # Requests arriving meanwhile coalesce into the next round.
                wrote = self.sync()
            except StorageError:
                wrote = True  # sticky in `error`; woken, the tick thread stops the replica
            if wrote:
                # Only then has the durable index moved (or the journal failed): waking
                # the tick thread for nothing would make it ask again, and so on.
                self._on_durable()

    def _stop_sync_thread(self) -> None:
        thread = self._thread
        if thread is None:
            return
        with self._wanted:
            self._closing = True
            self._wanted.notify()
        if thread is not threading.current_thread():
            thread.join()
        self._thread = None

    @property
    def unsynced(self) -> bool:
        return bool(self._pending)

    def _store_meta(self, durable: bool) -> None:
        data = self.meta.encode()
        self._io("meta write", lambda: self.files.replace(self.meta_path, data, durable))
        self._meta_dirty = False

    # ---- pysyncobj's Journal interface --------------------------------------------------

    def add(self, command: Any, idx: int, term: int) -> None:
        command = bytes(command)
        record = records.encode(command, idx, term)
        self.entries.append((command, idx, term))
        with self._buf:
            self._offsets.append(self._written + len(self._pending))
            self._pending += record
            self._pending_last = idx

    def clear(self) -> None:
        self.deleteEntriesFrom(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803
        if entryFrom >= len(self.entries):
            return
        with self._io_lock, self._buf:
            cut = self._offsets[entryFrom]
            del self.entries[entryFrom:]
            del self._offsets[entryFrom:]
            self.truncations += 1
            last = self.entries[-1][1] if self.entries else 0
            self._durable = min(self._durable, last)
            self._pending_last = last
            if cut >= self._written:
                del self._pending[cut - self._written:]
                return
            self._pending.clear()

            def truncate() -> None:
                self._log.truncate(cut)
                if self.durability.fsync_journal:
                    self._log.sync()

            self._io("journal truncation", truncate)
            self._written = cut

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803
        keep = self.entries[entryTo:]
        body = bytearray(records.FILE_MAGIC)
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(body))
            body += records.encode(command, idx, term)

        def rewrite() -> None:
            self._log.close()
            self.files.replace(self.path, bytes(body), self.durability.fsync_journal)
            self._log = self.files.open_log(self.path)

        with self._io_lock, self._buf:
            self._io("journal compaction", rewrite)
            self.entries = keep
            self._offsets = offsets
            self._pending.clear()
            self._written = len(body)
            if keep:
                self._durable = self._pending_last = keep[-1][1]

    def __getitem__(self, item: Any) -> Any:
        return self.entries[item]

    def __len__(self) -> int:
        return len(self.entries)

    def _destroy(self) -> None:
        self._stop_sync_thread()
        try:
            if self.error is None:
                self.sync()
                if self._meta_dirty:
                    self._store_meta(self.durability.fsync_meta)
        except StorageError:
            pass
        finally:
            self._log.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        if raftCommitIndex != self.meta.commit_index:
            self.meta.commit_index = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self.meta.commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: str | None) -> None:  # noqa: N802, N803
        self.meta.term = term
        self.meta.voted_for = votedForNodeId
        # Raft, figure 2: on stable storage before answering; pysyncobj sends the vote or
        # the new-term message right after this returns, or not at all if it raises.
        self._store_meta(self.durability.fsync_meta)

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self.meta.term

    def getVotedForNodeId(self) -> str | None:  # noqa: N802
        return self.meta.voted_for

    def onOneSecondTimer(self) -> None:  # noqa: N802
        # The commit index is only a hint for the restart (Raft keeps it volatile).
        if self._meta_dirty and self.error is None:
            self._store_meta(self.durability.fsync_meta)


def make_mmap_journal(path: Path, durability: Durability) -> Any:
    """pysyncobj's own mmap journal, msync'ed where ours fdatasyncs (benchmark only)."""
    from pysyncobj.journal import FileJournal

    class MmapJournal(FileJournal):  # type: ignore[misc]
        error: str | None = None
        truncations = 0
        background = False

        def sync(self) -> bool:
            if durability.fsync_journal:
                self.flush()
            return True

        def request_sync(self) -> None:
            self.sync()

        @property
        def durable_index(self) -> int:
            # Synced at the start of every tick, before the commit index is computed.
            return int(self[-1][1]) if len(self) else 0

        def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803
            self.truncations += 1
            super().deleteEntriesFrom(entryFrom)

    return MmapJournal(str(path))
