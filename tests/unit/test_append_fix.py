"""AppendEntries overlapping a follower's log never deletes entries that do not conflict."""

from __future__ import annotations

from hacontrol.raft.append_fix import rewrite


def log(*terms: int, start: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"c%d" % (start + i), start + i, t) for i, t in enumerate(terms)]


def msg(prev: int, prev_term: int, entries: list, commit: int) -> dict:
    return {"type": "append_entries", "term": 2, "prevLogIdx": prev, "prevLogTerm": prev_term,
            "entries": entries, "commit_index": commit}


OURS = log(1, 1, 1, 2, 2)  # indexes 1..5


def test_append_at_end_untouched() -> None:
    m = msg(5, 2, log(2, start=6), 5)
    assert rewrite(m, OURS[4:], 5, 2) == (m, None)


def test_resend_of_present_entries_keeps_the_rest() -> None:
    # Leader resends 3..4 after a rewound next index; 5 must survive.
    m = msg(2, 1, OURS[2:4], 4)
    new, reply = rewrite(m, OURS[1:], 5, 2)
    assert new["entries"] == [] and new["prevLogIdx"] == 5  # nothing for pysyncobj to cut
    assert new["commit_index"] == 4
    assert reply == 5  # only 1..4 were verified against the leader


def test_stale_heartbeat_keeps_the_rest() -> None:
    new, reply = rewrite(msg(2, 1, [], 5), OURS[1:], 5, 2)
    assert new["entries"] == [] and new["commit_index"] == 2 and reply == 3


def test_overlap_then_new_entries_appends_after_the_last() -> None:
    sent = OURS[3:5] + log(2, 2, start=6)
    new, reply = rewrite(msg(3, 1, sent, 5), OURS[2:], 5, 2)
    assert reply is None
    assert new["prevLogIdx"] == 5 and new["entries"] == log(2, 2, start=6)


def test_real_conflict_still_truncates_from_the_conflict() -> None:
    theirs = [(b"x4", 4, 3), (b"x5", 5, 3)]
    new, reply = rewrite(msg(3, 1, theirs, 3), OURS[2:], 5, 2)
    assert reply is None
    assert new["prevLogIdx"] == 3 and new["entries"] == theirs


def test_mismatched_prev_left_to_pysyncobj() -> None:
    m = msg(2, 9, OURS[2:3], 3)
    assert rewrite(m, OURS[1:], 5, 2) == (m, None)
