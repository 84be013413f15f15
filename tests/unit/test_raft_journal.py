"""The durable journal: group commit, power loss, torn tails, damage, compaction."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

from hacontrol.raft import records
from hacontrol.raft.config import Durability
from hacontrol.raft.journal import DurableJournal, Meta, first_mismatch, read_entries
from hacontrol.raft.storage import OsFiles, StorageError
from tests.unit.lossy_files import LossyFiles

J = Path("/d/raft.journal")
M = Path("/d/raft.journal.meta")


def open_journal(files: LossyFiles, durability: Durability | None = None) -> DurableJournal:
    return DurableJournal(J, M, durability or Durability(), files)


def fill(j: DurableJournal, first: int, last: int, term: int = 1) -> None:
    for i in range(first, last + 1):
        j.add(f"cmd{i}".encode(), i, term)


def indexes(j: DurableJournal) -> list[int]:
    return [e[1] for e in j.entries]


def test_entries_survive_power_loss_only_once_synced() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 3)
    j.sync()
    fill(j, 4, 5)
    assert indexes(j) == [1, 2, 3, 4, 5]
    files.power_loss()
    j2 = open_journal(files)
    assert j2.entries == [(b"cmd1", 1, 1), (b"cmd2", 2, 1), (b"cmd3", 3, 1)]


def test_one_sync_covers_every_entry_added_since_the_last() -> None:
    files = LossyFiles()
    j = open_journal(files)
    before = files.syncs
    fill(j, 1, 100)
    j.sync()
    j.sync()  # nothing new: no fsync
    assert files.syncs == before + 1
    files.power_loss()
    assert indexes(open_journal(files)) == list(range(1, 101))


def test_no_fsync_fault_loses_what_it_wrote() -> None:
    files = LossyFiles()
    j = open_journal(files, Durability(fsync_journal=False))
    fill(j, 1, 3)
    j.sync()
    assert files.read(J) != files.on_disk(J)  # written, not synced
    files.power_loss()
    assert open_journal(files).entries == []


def test_torn_tail_is_cut_off_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 3)
    j.sync()
    whole = records.encode(b"cmd4", 4, 1)
    for torn in (whole[:5], whole[:-1], b"\0" * 4096, whole[:-3] + b"xyz"):
        files.current[J] = bytearray(files.on_disk(J) + torn)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="hacontrol.raft.journal"):
            j2 = open_journal(files)
        assert indexes(j2) == [1, 2, 3]
        assert "torn tail" in caplog.text
        assert bytes(files.current[J]) == files.on_disk(J)  # the cut is itself durable
        fill(j2, 4, 4)
        j2.sync()
        assert indexes(open_journal(files)) == [1, 2, 3, 4]
        files.current[J] = bytearray(files.on_disk(J)[: -len(whole)])
        files.synced[J] = bytearray(files.current[J])


def test_damage_before_the_tail_refuses_to_start() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 5)
    j.sync()
    data = bytearray(files.on_disk(J))
    second = j._offsets[1]
    data[second + 20] ^= 0x01  # one bit in entry 2's payload
    files.current[J] = data
    with pytest.raises(StorageError, match="damaged before its tail"):
        open_journal(files)


def test_flipped_length_before_the_tail_refuses_to_start() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 5)
    j.sync()
    data = bytearray(files.on_disk(J))
    data[j._offsets[2] + 5] ^= 0x40  # entry 3's length field
    files.current[J] = data
    with pytest.raises(StorageError, match="offset"):
        open_journal(files)


def test_old_pysyncobj_journal_is_refused_with_a_clear_message() -> None:
    files = LossyFiles()
    files.replace(J, b"PYSYNCOBJ" + b"\0" * 31)
    files.replace(M, b"\x80\x04}q\x00.")
    with pytest.raises(StorageError, match="pysyncobj's own"):
        open_journal(files)


def test_conflict_truncation_is_durable_before_the_next_append() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 5, term=1)
    j.sync()
    cuts = j.truncations
    j.deleteEntriesFrom(2)  # keeps 1, 2
    assert j.truncations == cuts + 1
    assert indexes(open_journal(files)) == [1, 2]  # already on disk, before any append
    fill(j, 3, 4, term=2)
    files.power_loss()
    assert indexes(open_journal(files)) == [1, 2]
    j2 = open_journal(files)
    fill(j2, 3, 4, term=2)
    j2.sync()
    assert [e[2] for e in open_journal(files).entries] == [1, 1, 2, 2]


def test_truncating_unsynced_entries_needs_no_io() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 2)
    j.sync()
    fill(j, 3, 6)
    syncs = files.syncs
    j.deleteEntriesFrom(3)  # drops 4..6, all still buffered
    assert files.syncs == syncs
    j.sync()
    assert indexes(open_journal(files)) == [1, 2, 3]


def test_compaction_rewrites_durably() -> None:
    files = LossyFiles()
    j = open_journal(files)
    fill(j, 1, 10)
    j.sync()
    fill(j, 11, 12)
    j.deleteEntriesTo(8)  # keep 9..12, the unsynced two included
    files.power_loss()
    j2 = open_journal(files)
    assert indexes(j2) == [9, 10, 11, 12]
    fill(j2, 13, 13)
    j2.sync()
    files.power_loss()
    assert indexes(open_journal(files)) == [9, 10, 11, 12, 13]


def test_term_and_vote_are_durable_when_set() -> None:
    files = LossyFiles()
    j = open_journal(files)
    j.setCurrentTerm(7, "a:1")
    files.power_loss()
    j2 = open_journal(files)
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (7, "a:1")


def test_vote_no_fsync_fault_loses_the_vote() -> None:
    files = LossyFiles()
    j = open_journal(files, Durability(fsync_meta=False))
    j.setCurrentTerm(7, "a:1")
    assert open_journal(files).getCurrentTerm() == 7  # written, readable before the cut
    files.power_loss()
    j2 = open_journal(files, Durability(fsync_meta=False))
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (0, None)


def test_commit_index_is_stored_by_the_timer() -> None:
    files = LossyFiles()
    j = open_journal(files)
    j.setRaftCommitIndex(5)
    j.onOneSecondTimer()
    files.power_loss()
    assert open_journal(files).getRaftCommitIndex() == 5


def test_missing_or_damaged_meta_refuses_to_start() -> None:
    files = LossyFiles()
    open_journal(files).setCurrentTerm(3, None)
    good = files.on_disk(M)
    del files.current[M]
    with pytest.raises(StorageError, match="missing"):
        open_journal(files)
    bad = bytearray(good)
    bad[-1] ^= 0x01
    files.current[M] = bad
    with pytest.raises(StorageError, match="meta"):
        open_journal(files)


def test_a_failed_fsync_is_sticky() -> None:
    files = LossyFiles()
    j = open_journal(files)

    def broken() -> None:
        raise OSError(5, "Input/output error")

    j._log.sync = broken  # type: ignore[method-assign]
    fill(j, 1, 1)
    with pytest.raises(StorageError, match="Input/output"):
        j.sync()
    assert j.error is not None
    j._log.sync = lambda: None  # type: ignore[method-assign]
    with pytest.raises(StorageError):
        j.sync()  # no retry: the kernel may have dropped the pages already


def test_meta_roundtrip() -> None:
    files = LossyFiles()
    j = open_journal(files)
    j.setCurrentTerm(2, None)
    assert files.on_disk(M) == Meta(2, None, 1).encode()


def test_real_files_roundtrip_and_torn_tail(tmp_path: Path) -> None:
    path, meta = tmp_path / "raft.journal", tmp_path / "raft.journal.meta"
    j = DurableJournal(path, meta, Durability(), OsFiles())
    for i in range(1, 51):
        j.add(os.urandom(100), i, 3)
    j.sync()
    j.setCurrentTerm(3, "x:1")
    j._destroy()
    with open(path, "ab") as f:
        f.write(records.encode(b"half", 51, 3)[:10])
    assert [e[1] for e in read_entries(path)] == list(range(1, 51))
    j2 = DurableJournal(path, meta, Durability(), OsFiles())
    assert len(j2) == 50 and j2.getVotedForNodeId() == "x:1"
    assert path.stat().st_size == j2._written
    j2._destroy()
    assert not (tmp_path / "raft.journal.meta.tmp").exists()


def test_first_mismatch_compares_the_indexes_both_logs_hold() -> None:
    a = [(b"x1", 1, 1), (b"x2", 2, 1), (b"x3", 3, 2)]
    assert first_mismatch(a, a[:2]) is None
    assert first_mismatch(a[1:], [(b"x1", 1, 1), (b"x2", 2, 1), (b"y3", 3, 2), (b"z", 4, 2)]) == 3
    assert first_mismatch(a, [(b"x2", 2, 3)]) == 2  # same command, other term


def test_without_meta_fsync_an_empty_meta_file_means_term_zero() -> None:
    files = LossyFiles()
    open_journal(files, Durability(fsync_meta=False)).setCurrentTerm(4, "a:1")
    files.current[M] = bytearray()  # renamed, content never synced
    j = open_journal(files, Durability(fsync_meta=False))
    assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (0, None)
    files.current[M] = bytearray()
    with pytest.raises(StorageError):
        open_journal(files)


def test_the_sync_thread_makes_entries_durable_and_says_so() -> None:
    files = LossyFiles()
    journal = DurableJournal(J, M, Durability(), files)
    woken = threading.Event()
    journal.start_sync_thread(woken.set)
    try:
        journal.add(b"a", 2, 1)
        journal.add(b"b", 3, 1)
        assert journal.durable_index == 0
        journal.request_sync()
        assert woken.wait(10)
        assert journal.durable_index == 3
        assert [e[1] for e in records.scan(files.on_disk(J)).entries] == [2, 3]
        journal.add(b"c", 4, 1)  # offsets stay right across a background write
        journal.sync()
        assert [e[0] for e in records.scan(files.on_disk(J)).entries] == [b"a", b"b", b"c"]
    finally:
        journal._destroy()
    assert journal._thread is None


def test_cutting_the_log_lowers_the_durable_index() -> None:
    files = LossyFiles()
    journal = DurableJournal(J, M, Durability(), files)
    for i in (2, 3, 4):
        journal.add(b"x", i, 1)
    journal.sync()
    assert journal.durable_index == 4
    journal.deleteEntriesFrom(1)  # keeps index 2
    assert journal.durable_index == 2
    journal.add(b"y", 3, 2)
    assert journal.durable_index == 2
