"""A follower's read asks (hacontrol/raft/follower_reads.py): when its reads may be served."""

from __future__ import annotations

from hacontrol.raft.follower_reads import REFUSED, FollowerReads
from hacontrol.raft.readindex import ReadOutcome

from .test_read_index import Reads

L1, L2 = object(), object()  # two leaders, as pysyncobj's node objects


def test_the_reads_wait_until_the_follower_has_applied_the_index_it_was_given() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    assert asks.add(reads.cb("a"))  # the first read wakes the tick thread
    assert not asks.add(reads.cb("b"))  # the second rides along
    seq = asks.step(L1, term=3, applied=10, now=0.0)
    assert seq is not None and reads.got == {}
    assert asks.given(seq, 12, applied=10)  # the leader's commit index is ahead of ours
    assert reads.got == {}
    assert asks.step(L1, term=3, applied=11, now=0.1) is None and reads.got == {}
    asks.step(L1, term=3, applied=12, now=0.2)
    assert reads.got == {"a": (12, ReadOutcome.OK), "b": (12, ReadOutcome.OK)}
    assert asks.answered == 1 and asks.idle()


def test_reads_that_arrive_while_an_ask_is_out_wait_for_the_next_one() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    asks.add(reads.cb("a"))
    first = asks.step(L1, term=3, applied=10, now=0.0)
    assert not asks.add(reads.cb("late"))  # the answer to the ask out starts the next
    assert asks.step(L1, term=3, applied=10, now=0.1) is None  # one ask at a time
    assert first is not None and asks.given(first, 10, applied=10)
    assert reads.got == {"a": (10, ReadOutcome.OK)}
    second = asks.step(L1, term=3, applied=10, now=0.2)
    assert second is not None and second != first
    assert not asks.given(first, 99, applied=10)  # a stale answer decides nothing
    assert asks.given(second, 11, applied=11)
    assert reads.got["late"] == (11, ReadOutcome.OK)


def test_a_refusal_sends_the_reads_to_the_log() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    asks.add(reads.cb("a"))
    seq = asks.step(L1, term=3, applied=10, now=0.0)
    assert seq is not None and asks.given(seq, REFUSED, applied=10)
    assert reads.got == {"a": (0, ReadOutcome.NOT_LEADER)} and asks.answered == 0


def test_no_leader_known_or_a_new_leader_or_term_fails_the_reads() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    asks.add(reads.cb("none"))
    assert asks.step(None, term=3, applied=10, now=0.0) is None
    assert reads.got == {"none": (0, ReadOutcome.NOT_LEADER)}
    asks.add(reads.cb("moved"))
    assert asks.step(L1, term=3, applied=10, now=0.0) is not None
    asks.step(L2, term=3, applied=10, now=0.1)  # its answer may never come
    assert reads.got["moved"] == (0, ReadOutcome.LOST)
    asks.add(reads.cb("term"))
    assert asks.step(L1, term=3, applied=10, now=0.2) is not None
    asks.step(L1, term=4, applied=10, now=0.3)
    assert reads.got["term"] == (0, ReadOutcome.LOST)


def test_a_leader_that_never_answers_is_not_asked_again_in_its_term() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    asks.add(reads.cb("a"))
    assert asks.step(L1, term=3, applied=10, now=0.0) is not None
    asks.step(L1, term=3, applied=10, now=0.5)
    assert reads.got == {}
    asks.step(L1, term=3, applied=10, now=1.01)  # an older leader ignores the message
    assert reads.got == {"a": (0, ReadOutcome.LOST)}
    asks.add(reads.cb("b"))
    assert asks.step(L1, term=3, applied=10, now=1.1) is None  # straight to the log
    assert reads.got["b"] == (0, ReadOutcome.NOT_LEADER)
    asks.add(reads.cb("c"))  # a new term (say, the same leader again) is asked
    assert asks.step(L1, term=4, applied=10, now=1.2) is not None


def test_fail_all_answers_every_read_once() -> None:
    asks, reads = FollowerReads(1.0), Reads()
    asks.add(reads.cb("given"))
    seq = asks.step(L1, term=3, applied=10, now=0.0)
    assert seq is not None
    asks.given(seq, 20, applied=10)
    asks.add(reads.cb("out"))
    asks.step(L1, term=3, applied=10, now=0.1)
    asks.add(reads.cb("queued"))
    asks.fail_all(ReadOutcome.NOT_LEADER)
    assert {k: v[1] for k, v in reads.got.items()} == {
        "given": ReadOutcome.NOT_LEADER, "out": ReadOutcome.NOT_LEADER,
        "queued": ReadOutcome.NOT_LEADER}
    assert asks.idle()
