"""The journal reader against pysyncobj's own journal, and the Log Matching comparison."""

from __future__ import annotations

from pathlib import Path

from pysyncobj.journal import FileJournal

from chaos.checker.journal import JOURNAL, Entry, ReplicaLog, read_log
from chaos.checker.logmatch import compare, first_difference, log_matching
from chaos.history import History


def _journal(d: Path, entries: list[tuple[bytes, int, int]], term: int = 0,
             commit: int | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    j = FileJournal(str(d / JOURNAL))
    for e in entries:
        j.add(*e)
    if commit is not None:
        j.setRaftCommitIndex(commit)
    j.setCurrentTerm(term, "c2")
    j.onOneSecondTimer()
    j._destroy()
    return d


def test_reads_what_pysyncobj_wrote(tmp_path: Path) -> None:
    d = _journal(tmp_path / "c1", [(b"a", 1, 1), (b"bb", 2, 1), (b"ccc", 3, 2)], term=2,
                 commit=2)
    log = read_log(d)
    assert sorted(log.entries) == [1, 2, 3]
    assert [log.entries[i].term for i in (1, 2, 3)] == [1, 1, 2]
    assert (log.current_term, log.voted_for, log.commit_index) == (2, "c2", 2)
    assert log.torn_at is None and log.error is None


def test_a_torn_record_ends_the_log(tmp_path: Path) -> None:
    d = _journal(tmp_path / "c1", [(b"a", 1, 1), (b"bb", 2, 1)])
    data = bytearray((d / JOURNAL).read_bytes())
    # Break the trailing size of the second record, as a half-written append would.
    second = 40 + (4 + 16 + 1 + 4)
    data[second + 4 + 16 + 2] ^= 0xFF
    (d / JOURNAL).write_bytes(bytes(data))
    log = read_log(d)
    assert sorted(log.entries) == [1]
    assert log.torn_at == second


def test_a_missing_journal_is_an_empty_log(tmp_path: Path) -> None:
    log = read_log(tmp_path)
    assert log.entries == {} and log.error is None


def _log(*entries: tuple[int, int, int], commit: int | None = None) -> ReplicaLog:
    return ReplicaLog({i: Entry(i, t, c) for i, t, c in entries}, commit_index=commit)


def test_uncommitted_divergent_suffix_is_legal() -> None:
    a = _log((1, 1, 10), (2, 1, 20), (3, 2, 30))
    b = _log((1, 1, 10), (2, 1, 20), (3, 3, 99))  # index 3 from another leader's term
    assert first_difference(a, b) is None


def test_same_term_different_command_is_reported_at_the_first_index() -> None:
    a = _log((1, 1, 10), (2, 2, 20), (3, 2, 30))
    b = _log((1, 1, 10), (2, 2, 21), (3, 2, 30))
    diff = first_difference(a, b)
    assert diff is not None and diff["index"] == 2 and diff["rule"] == "log matching"


def test_an_earlier_difference_under_a_later_match_is_reported() -> None:
    a = _log((1, 1, 10), (2, 1, 20), (3, 3, 30))
    b = _log((1, 1, 10), (2, 2, 20), (3, 3, 30))
    diff = first_difference(a, b)
    assert diff is not None and diff["index"] == 2


def test_committed_entries_must_agree_whatever_their_terms() -> None:
    a = _log((1, 1, 10), (2, 1, 20), commit=2)
    b = _log((1, 1, 10), (2, 2, 22), commit=2)
    diff = first_difference(a, b)
    assert diff is not None and diff["rule"] == "committed entry"


def test_verdict_from_recorded_snapshots() -> None:
    good = compare({"c1": _log((1, 1, 1)), "c2": _log((1, 1, 1))})
    bad = compare({"c1": _log((1, 1, 1)), "c2": _log((1, 1, 2)), "c3": _log((1, 1, 1))})
    h = History(seed=1, nemesis="power-loss-one", backend="local")
    h.faults.append({"phase": "start", "logs": [{"after": "cut 1", **good}]})
    assert log_matching(h).valid
    h.faults.append({"phase": "start", "logs": [{"after": "cut 2", **bad}]})
    v = log_matching(h)
    assert not v.valid
    assert "c1 and c2 differ at index 1 after cut 2" in v.summary
    assert len(v.details) == 2  # c1-c2 and c2-c3
