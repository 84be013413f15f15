"""Pure scheduler decisions: rollouts, drains, autoscaling, node liveness."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hacontrol.scheduler import autoscale, drain, rollout
from hacontrol.scheduler.liveness import Heard, judge, nodes_to_mark_down

Inst = rollout.Allocation


def test_rollout_starts_max_parallel_and_waits_for_health() -> None:
    old = [Inst(f"o{i}", "running", None, 0.0) for i in range(3)]
    step = rollout.next_step(3, 1, 5.0, 100.0, False, 1, [], old, now=10.0)
    assert step.start == 1 and step.stop == [] and step.status is None
    new = [Inst("n0", "running", None, 8.0)]  # up 2 s of the 5 required
    assert rollout.next_step(3, 1, 5.0, 100.0, False, 1, new, old, now=10.0).empty
    new = [Inst("n0", "running", None, 4.0)]  # healthy long enough: one old goes, one more new
    step = rollout.next_step(3, 1, 5.0, 100.0, False, 1, new, old, now=10.0)
    assert step.stop == ["o0"] and step.start == 1


def test_rollout_health_gates_and_success() -> None:
    unhealthy = [Inst("n0", "running", "unhealthy", 0.0)]
    old = [Inst("o0", "running", None, 0.0)]
    assert rollout.next_step(1, 1, 0.0, 100.0, False, 1, unhealthy, old, now=50.0).empty
    healthy = [Inst("n0", "running", "healthy", 0.0)]
    step = rollout.next_step(1, 1, 0.0, 100.0, False, 1, healthy, old, now=50.0)
    assert step.stop == ["o0"]
    done = rollout.next_step(1, 1, 0.0, 100.0, False, 1, healthy, [], now=50.0)
    assert done.status == "successful"


def test_rollout_deadline_and_auto_revert() -> None:
    old = [Inst("o0", "running", None, 0.0)]
    new = [Inst("n0", "starting", None, None)]
    failed = rollout.next_step(1, 1, 0.0, 100.0, True, 4, new, old, now=101.0)
    assert failed.status == "failed" and failed.revert_to == 4
    kept = rollout.next_step(1, 1, 0.0, 100.0, False, 4, new, old, now=101.0)
    assert kept.status == "failed" and kept.revert_to is None
    crashed = [Inst("n0", "failed", None, None)]
    assert rollout.next_step(1, 1, 0.0, 100.0, True, 4, crashed, old, now=1.0).revert_to == 4


@given(st.integers(1, 6), st.integers(1, 3), st.integers(0, 6), st.integers(0, 6))
def test_rollout_never_drops_below_count_minus_in_flight(count: int, par: int, n_new: int,
                                                         n_old: int) -> None:
    new = [Inst(f"n{i}", "running", None, 0.0) for i in range(min(n_new, count))]
    old = [Inst(f"o{i}", "running", None, 0.0) for i in range(n_old)]
    step = rollout.next_step(count, par, 1.0, 100.0, False, 1, new, old, now=50.0)
    # Only old instances replaced by healthy new ones are stopped.
    assert len(old) - len(step.stop) + len(new) >= min(count, len(old) + len(new))
    assert len(new) + step.start <= count


def test_drain_moves_max_parallel_per_job_then_everything_at_deadline() -> None:
    on = [drain.OnNode(f"a{i}", ("default", "web"), 2) for i in range(5)] + \
        [drain.OnNode("b0", ("default", "db"), 1)]
    assert drain.to_migrate(on, {}, now=0.0, deadline=10.0) == ["a0", "a1", "b0"]
    assert drain.to_migrate(on, {("default", "web"): 2}, 0.0, 10.0) == ["b0"]
    assert drain.to_migrate(on, {("default", "web"): 2, ("default", "db"): 1}, 0.0, 10.0) == []
    assert len(drain.to_migrate(on, {("default", "web"): 2}, 10.0, 10.0)) == 6


def test_autoscale_up_down_bounds_and_cooldown() -> None:
    up = autoscale.decide(2, 0.5, [0.5, 0.5], 1, 10, 0.5, None, 30, now=100)
    assert up is not None and up.count == 4  # 100% of request vs 50% target
    down = autoscale.decide(4, 0.5, [0.05] * 4, 1, 10, 0.5, None, 30, now=100)
    assert down is not None and down.count == 1
    capped = autoscale.decide(4, 0.5, [0.5] * 4, 1, 5, 0.5, None, 30, now=100)
    assert capped is not None and capped.count == 5
    assert autoscale.decide(2, 0.5, [0.5, 0.5], 1, 10, 0.5, 90, 30, now=100) is None
    assert autoscale.decide(2, 0.5, [], 1, 10, 0.5, None, 30, now=100) is None
    steady = autoscale.decide(2, 0.5, [0.25, 0.25], 1, 10, 0.5, None, 30, now=100)
    assert steady is None


def test_liveness_grace_and_fresh_leader() -> None:
    hb = {"n1": 10.0, "n2": 14.0}
    assert nodes_to_mark_down(["n1", "n2"], hb, leader_since=0.0, now=15.0, grace_s=3) == ["n1"]
    # A new leader counts every node from its own start.
    assert nodes_to_mark_down(["n1", "n3"], {}, leader_since=13.0, now=15.0, grace_s=3) == []
    assert nodes_to_mark_down(["n3"], {}, leader_since=11.0, now=15.0, grace_s=3) == ["n3"]


def test_liveness_tells_slow_from_dead() -> None:
    hb = {"busy": 1.0, "reachable": 1.0, "probed-dead": 1.0, "no-address": 1.0,
          "failed-long-ago": 9.0, "fresh": 14.0}
    heard = Heard(hb, syncing={"busy"},
                  probeable={"busy", "reachable", "probed-dead", "failed-long-ago"},
                  probing=set(), probe_failed={"probed-dead": 5.0, "failed-long-ago": 2.0})
    v = judge(sorted(hb), heard, leader_since=0.0, now=15.0, grace_s=3)
    # In flight: never judged. Silent but reachable: probed first, also when its last probe
    # failed before it was last heard from. Failed after its last contact, or no address:
    # down.
    assert v.probe == ["failed-long-ago", "reachable"]
    assert v.down == ["no-address", "probed-dead"]
    under_way = Heard(hb, probeable={"reachable"}, probing={"reachable"})
    assert "reachable" not in judge(["reachable"], under_way, 0.0, 15.0, 3).down


@given(st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 20)),
       st.sets(st.sampled_from("abcdef")), st.sets(st.sampled_from("abcdef")),
       st.floats(0, 20))
def test_liveness_never_marks_a_syncing_or_recently_heard_node_down(
        hb: dict[str, float], syncing: set[str], probeable: set[str], now: float) -> None:
    v = judge(list("abcdef"), Heard(hb, syncing, probeable), 0.0, now, 3.0)
    for name in v.down + v.probe:
        assert name not in syncing and now - hb.get(name, 0.0) > 3.0
    assert not set(v.down) & set(v.probe)


def test_a_new_leader_waits_out_a_long_poll_before_downing_a_node_it_cannot_probe() -> None:
    quiet = Heard({}, probeable={"addressed"})
    early = judge(["addressed", "bare"], quiet, leader_since=0.0, now=5.0, grace_s=3,
                  longest_poll_s=30)
    assert early.probe == ["addressed"] and early.down == []
    late = judge(["bare"], quiet, leader_since=0.0, now=33.5, grace_s=3, longest_poll_s=30)
    assert late.down == ["bare"]
