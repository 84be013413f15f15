"""The membership nemesis's decisions and the checkers' view of a changing member set."""

from __future__ import annotations

import random
from typing import Any

import pytest

from chaos.checker.logmatch import log_matching
from chaos.checker.membership import membership, tally
from chaos.history import History
from chaos.nemesis import (
    UnsupportedNemesis,
    check_supported,
    make_schedule,
    mixable,
    validate_schedule,
)
from chaos.nemesis.membership import (
    MAX_VOTERS,
    MIN_VOTERS,
    WINDOW_MIN_S,
    choose_change,
    companion_fault,
    companions,
)

LOCAL = frozenset({"kill", "pause", "power", "membership"})
NETNS = LOCAL | {"partition", "loss"}


def test_changes_keep_three_to_five_voters_one_at_a_time() -> None:
    three, four, five = (["c1", "c2", "c3", "c4", "c5"][:n] for n in (3, 4, 5))
    rngs = [random.Random(s) for s in range(40)]
    assert {choose_change(r, three, []) for r in rngs} == {"join"}
    assert {choose_change(r, five, []) for r in rngs} == {"remove"}
    assert {choose_change(r, four, []) for r in rngs} == {"join", "remove"}
    # A join still catching up: no other change starts.
    assert {choose_change(r, four, ["c4"]) for r in rngs} == {"none"}
    assert (MIN_VOTERS, MAX_VOTERS) == (3, 5)


def test_companion_faults_fit_the_backend() -> None:
    assert not any(c.startswith("partition") for c in companions(LOCAL))
    assert {"partition-leader", "partition-minority"} <= set(companions(NETNS))
    reps = ["c1", "c2", "c4", "c5"]
    rng = random.Random(1)
    assert companion_fault(rng, "kill-leader", reps, "c4") == (["c4"], [])
    killed, _ = companion_fault(rng, "kill-random", reps, "c4")
    assert len(killed) == 1 and killed[0] in reps
    assert companion_fault(rng, "partition-leader", reps, "c2") == (
        [], [["c2"], ["c1", "c4", "c5"]])
    _, (minority, majority) = companion_fault(rng, "partition-minority", reps, None)
    assert sorted(minority + majority) == reps and len(minority) <= len(majority)
    # No leader known: a seeded stand-in among the replicas.
    assert companion_fault(random.Random(2), "kill-leader", reps, None)[0][0] in reps
    assert companion_fault(rng, "none", reps, "c1") == ([], [])


def test_schedule_registry_and_refusals() -> None:
    sched = make_schedule("membership", 3, 60, ["c1", "c2", "c3"])
    validate_schedule(sched, 60, ["c1", "c2", "c3"])
    assert sched and all(w.kind == "membership" and w.end_s - w.start_s >= WINDOW_MIN_S
                         for w in sched)
    # Not drawn by mixed, whose schedules stay as they were.
    assert "membership" not in mixable()
    for seed in range(10):
        assert all(w.nemesis != "membership" for w in make_schedule("mixed", seed, 300,
                                                                    ["c1", "c2", "c3"]))
    with pytest.raises(UnsupportedNemesis, match="membership"):
        check_supported("membership", "compose", {"kill", "pause", "partition"})
    with pytest.raises(UnsupportedNemesis, match="follows joins"):
        check_supported("membership", "local", LOCAL, has_membership=False)
    check_supported("membership", "local", LOCAL)


def _window(h: History, wid: int, start: dict[str, Any], end: dict[str, Any]) -> None:
    h.faults.append({"t": wid * 10.0, "fault": "membership", "kind": "membership",
                     "phase": "start", "id": wid, "targets": [], **start})
    h.faults.append({"t": wid * 10.0 + 5, "fault": "membership", "kind": "membership",
                     "phase": "end", "id": wid, "targets": [], **end})


def _history() -> History:
    h = History(seed=1, nemesis="membership", backend="local")
    _window(h, 0, {"change": "join", "member": "c4", "voters": ["c1", "c2", "c3"],
                   "companion": "kill-leader"},
            {"outcome": "done", "voters_after": ["c1", "c2", "c3", "c4"]})
    _window(h, 1, {"change": "remove", "member": "c2", "voters": ["c1", "c2", "c3", "c4"],
                   "companion": "partition-minority"},
            {"outcome": "refused", "reason": "quorum_at_risk",
             "voters_after": ["c1", "c2", "c3", "c4"]})
    _window(h, 2, {"change": "remove", "member": "c1", "voters": ["c1", "c2", "c3", "c4"],
                   "companion": "kill-random"},
            {"outcome": "unknown", "reason": "not_found", "voters_after": ["c2", "c3", "c4"]})
    h.final["membership"] = {"tracked": ["c2", "c3", "c4"], "voters": ["c2", "c3", "c4"],
                             "dead_voters": [], "retired": ["c1"], "pending": []}
    return h


def test_refusals_and_settled_answers_are_valid() -> None:
    h = _history()
    v = membership(h)
    assert v is not None and v.valid, v
    assert tally(h) == {"windows": 3, "joins": 1, "removals": 1,
                        "refused": {"quorum_at_risk": 1}, "uncertain": 0, "failed": 0,
                        "no_change": 0}
    assert "1 joins and 1 removals done, 1 refused as expected" in v.summary
    assert membership(History(seed=1, nemesis="kill-leader", backend="local")) is None


def test_the_membership_checker_can_fail() -> None:
    failed = _history()
    failed.faults[-1]["outcome"] = "failed"
    failed.faults[-1]["reason"] = "HTTP 500"
    assert membership(failed).valid is False  # type: ignore[union-attr]
    # A removed replica still voting at the end, or a running one left out.
    stray = _history()
    stray.final["membership"]["voters"] = ["c1", "c2", "c3", "c4"]
    v = membership(stray)
    assert v is not None and not v.valid
    assert v.details[0]["problem"] == "the voters at the end are not the replicas running"
    dead = _history()
    dead.final["membership"]["dead_voters"] = ["c3"]
    assert membership(dead).valid is False  # type: ignore[union-attr]
    small = _history()
    small.faults[-1]["voters_after"] = ["c3", "c4"]
    assert membership(small).valid is False  # type: ignore[union-attr]


def test_log_matching_reads_the_snapshots_taken_after_changes() -> None:
    h = History(seed=1, nemesis="membership", backend="local")
    diverged = {"replicas": {}, "divergences": [{"replicas": ["c1", "c4"], "index": 7}]}
    _window(h, 0, {"change": "join", "member": "c4"}, {"outcome": "done", "logs": [diverged]})
    v = log_matching(h)
    assert not v.valid and v.details[0]["replicas"] == ["c1", "c4"]
    h.faults[-1]["logs"] = [{"replicas": {}, "divergences": []}]
    assert log_matching(h).valid
