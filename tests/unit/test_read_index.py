"""ReadIndex decisions (hacontrol/raft/readindex.py): when a batch of reads may be served."""

from __future__ import annotations

from dataclasses import replace

from hacontrol.raft.readindex import LeaderView, ReadOutcome, ReadRounds, probe_answer

LEADING = LeaderView(leader=True, term=7, commit_index=40, applied_index=40,
                     own_term_committed=True, voters=3)


class Reads:
    """Callbacks that record what each read was told."""

    def __init__(self) -> None:
        self.got: dict[str, tuple[int, ReadOutcome]] = {}

    def cb(self, name: str):  # type: ignore[no-untyped-def]
        def callback(index: int, outcome: ReadOutcome) -> None:
            assert name not in self.got, f"{name} answered twice"
            self.got[name] = (index, outcome)
        return callback


def test_a_majority_of_the_same_term_confirms_the_commit_index_recorded_at_the_start() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    rounds.add(reads.cb("b"))
    seq = rounds.step(LEADING, now=0.0)
    assert seq is not None and reads.got == {}
    later = replace(LEADING, commit_index=45, applied_index=45)
    assert rounds.ack("n2", seq, 7, later)
    # The index recorded when the round started, not the commit index at confirmation.
    assert reads.got == {"a": (40, ReadOutcome.OK), "b": (40, ReadOutcome.OK)}
    assert rounds.rounds == 1 and rounds.idle()


def test_five_voters_need_two_acks_and_one_voter_counts_once() -> None:
    view = replace(LEADING, voters=5)
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    seq = rounds.step(view, 0.0)
    assert seq is not None
    assert not rounds.ack("n2", seq, 7, view)
    assert not rounds.ack("n2", seq, 7, view)
    assert reads.got == {}
    assert rounds.ack("n3", seq, 7, view)
    assert reads.got == {"a": (40, ReadOutcome.OK)}


def test_reads_arriving_during_a_round_wait_for_the_next_one() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("early"))
    first = rounds.step(LEADING, 0.0)
    rounds.add(reads.cb("late"))
    assert rounds.step(LEADING, 0.01) is None  # one round at a time
    assert first is not None and rounds.ack("n2", first, 7, LEADING)
    assert set(reads.got) == {"early"}
    now = replace(LEADING, commit_index=41, applied_index=41)
    second = rounds.step(now, 0.02)
    assert second is not None and second != first
    # A late answer to the first round says nothing about reads that came after it.
    assert not rounds.ack("n3", first, 7, now)
    assert set(reads.got) == {"early"}
    assert rounds.ack("n3", second, 7, now)
    assert reads.got["late"] == (41, ReadOutcome.OK)


def test_a_voter_with_a_newer_term_loses_the_round() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    seq = rounds.step(LEADING, 0.0)
    assert seq is not None
    assert rounds.ack("n2", seq, 8, LEADING)
    assert reads.got == {"a": (0, ReadOutcome.LOST)}


def test_no_majority_in_time_loses_the_round() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    assert rounds.step(LEADING, 0.0) is not None
    assert rounds.step(LEADING, 0.2) is None and reads.got == {}
    rounds.step(LEADING, 0.3)
    assert reads.got == {"a": (0, ReadOutcome.LOST)}


def test_stepping_down_or_a_new_term_loses_the_round() -> None:
    for view in (replace(LEADING, leader=False), replace(LEADING, term=8)):
        rounds, reads = ReadRounds(0.25), Reads()
        rounds.add(reads.cb("a"))
        seq = rounds.step(LEADING, 0.0)
        assert seq is not None
        rounds.step(view, 0.01)
        assert reads.got == {"a": (0, ReadOutcome.LOST)}
        # and an ack arriving after that confirms nothing
        assert not rounds.ack("n2", seq, 7, LEADING)


def test_a_follower_or_a_leader_without_a_commit_in_its_term_does_not_start_a_round() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    assert rounds.step(replace(LEADING, leader=False), 0.0) is None
    rounds.add(reads.cb("b"))
    assert rounds.step(replace(LEADING, own_term_committed=False), 0.0) is None
    assert reads.got == {"a": (0, ReadOutcome.NOT_LEADER), "b": (0, ReadOutcome.NOT_READY)}


def test_confirmed_reads_wait_until_the_read_index_is_applied() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    behind = replace(LEADING, applied_index=38)
    rounds.add(reads.cb("a"))
    seq = rounds.step(behind, 0.0)
    assert seq is not None and rounds.ack("n2", seq, 7, behind)
    assert reads.got == {} and not rounds.idle()
    rounds.step(replace(LEADING, applied_index=39), 0.01)
    assert reads.got == {}
    rounds.step(LEADING, 0.02)
    assert reads.got == {"a": (40, ReadOutcome.OK)}


def test_a_single_voter_confirms_alone() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    assert rounds.step(replace(LEADING, voters=1), 0.0) is None
    assert reads.got == {"a": (40, ReadOutcome.OK)}


def test_fail_all_answers_every_read_once() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("in-round"))
    seq = rounds.step(replace(LEADING, applied_index=30), 0.0)
    assert seq is not None
    rounds.add(reads.cb("waiting"))
    rounds.fail_all(ReadOutcome.NOT_LEADER)
    assert reads.got == {"in-round": (0, ReadOutcome.NOT_LEADER),
                         "waiting": (0, ReadOutcome.NOT_LEADER)}


def test_voters_answer_with_their_term_and_ignore_newer_probes() -> None:
    assert probe_answer(7, 7) == 7  # confirms
    assert probe_answer(6, 7) == 7  # tells the old leader it was deposed
    assert probe_answer(8, 7) is None  # not yet heard of that term: no promise made


def test_only_a_read_that_nothing_else_will_carry_asks_for_a_wake_up() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    assert rounds.add(reads.cb("first"))  # idle: the tick thread must be woken
    assert not rounds.add(reads.cb("queued"))  # behind it: the same step takes it
    seq = rounds.step(LEADING, 0.0)
    assert seq is not None
    # A round in flight: the ack that completes it starts the next round with these.
    assert not rounds.add(reads.cb("during"))
    assert not rounds.add(reads.cb("during2"))
    assert rounds.ack("n2", seq, 7, LEADING)
    # What the tick thread does after a completing ack (node.hc_read_step).
    second = rounds.step(LEADING, 0.01)
    assert second is not None
    assert rounds.ack("n3", second, 7, LEADING)
    assert set(reads.got) == {"first", "queued", "during", "during2"}
    assert rounds.idle() and rounds.add(reads.cb("after"))


def test_reads_held_back_by_a_lost_round_go_in_the_next_tick() -> None:
    rounds, reads = ReadRounds(0.25), Reads()
    rounds.add(reads.cb("a"))
    assert rounds.step(LEADING, 0.0) is not None
    assert not rounds.add(reads.cb("b"))  # no wake-up: the round in flight carries it
    # No answer comes; the tick after the deadline loses the round and starts the next.
    assert rounds.step(LEADING, 0.3) is not None
    assert reads.got == {"a": (0, ReadOutcome.LOST)}
