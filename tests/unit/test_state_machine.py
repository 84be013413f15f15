"""The replicated state machine, fed plain commands: no sockets, no clock."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

SPEC = {"command": ["sleep", "100"], "count": 2, "resources": {"cpu": 0.5, "memory_mb": 100}}


class Feeder:
    """Applies commands with increasing log indexes, as the Raft log would."""

    def __init__(self, machine: StateMachine | None = None) -> None:
        self.m = machine or StateMachine()
        self.index = 0
        self.ts = 1000.0

    def __call__(self, op: str, idem: str | None = None, **args: Any) -> dict[str, Any]:
        self.index += 1
        self.ts += 1
        return self.m.apply(C.Command(op, self.ts, args, idem).encode(), self.index)


def test_job_put_creates_pending_allocations() -> None:
    f = Feeder()
    r = f(C.JOB_PUT, namespace="default", name="web", spec=SPEC)
    assert r["ok"], r
    assert r["job"]["version"] == 1
    assert len(f.m.pending_allocs()) == 2


def test_invalid_spec_rejected_with_field_and_nothing_applied() -> None:
    f = Feeder()
    before = f.m.snapshot()
    r = f(C.JOB_PUT, namespace="default", name="web", spec={"command": "sleep 1"})
    assert not r["ok"]
    assert r["error"]["code"] == "invalid"
    assert r["error"]["field"] == "command"
    r = f(C.JOB_PUT, namespace="default", name="web",
          spec={**SPEC, "resources": {"cpu": -1}})
    assert r["error"]["field"] == "resources.cpu"
    # Only the applied index moved.
    a, b = msgpack.unpackb(before), msgpack.unpackb(f.m.snapshot())
    a.pop("index"), b.pop("index")
    assert a == b


def test_garbage_commands_never_raise() -> None:
    m = StateMachine()
    for i, raw in enumerate([b"", b"\xff\xff", msgpack.packb([1, 2]),
                             msgpack.packb({"op": "job_put"}),
                             msgpack.packb({"op": "nope", "ts": 1, "args": {}}),
                             msgpack.packb({"op": "plan", "ts": 1, "args": {"placements": 3}}),
                             msgpack.packb({"op": "alloc_update", "ts": 1,
                                            "args": {"node": "n", "updates": [{"id": 1}]}})]):
        r = m.apply(raw, i + 1)
        assert r["ok"] is False
        assert r["error"]["code"] == "invalid"


def test_quota_bounds_create_update_and_scale() -> None:
    f = Feeder()
    assert f(C.NS_PUT, name="team", quota={"cpu": 2.0, "memory_mb": 1000, "processes": 3})["ok"]
    ok = f(C.JOB_PUT, namespace="team", name="a", spec=SPEC)  # 1.0 cpu, 200 MB, 2 procs
    assert ok["ok"]
    r = f(C.JOB_PUT, namespace="team", name="b", spec={**SPEC, "count": 2})
    assert r["error"]["code"] == "quota_exceeded"
    assert r["error"]["field"] == "count"
    r = f(C.JOB_SCALE, namespace="team", name="a", count=4)
    assert r["error"]["code"] == "quota_exceeded"
    assert f(C.JOB_SCALE, namespace="team", name="a", count=3)["ok"]
    r = f(C.JOB_PUT, namespace="team", name="a",
          spec={**SPEC, "count": 3, "resources": {"cpu": 1.0, "memory_mb": 10}})
    assert r["error"]["code"] == "quota_exceeded"
    assert r["error"]["field"] == "resources.cpu"
    usage = f.m.namespace_view("team")["usage"]
    assert usage == {"cpu": 1.5, "memory_mb": 300, "processes": 3}
    # A quota below current usage is refused rather than leaving the namespace over it.
    r = f(C.NS_PUT, name="team", quota={"processes": 1})
    assert r["error"]["code"] == "quota_exceeded"
    # Deleting frees the quota at once.
    assert f(C.JOB_DELETE, namespace="team", name="a")["ok"]
    assert f.m.namespace_view("team")["usage"]["processes"] == 0


def test_unknown_namespace_is_not_found() -> None:
    f = Feeder()
    r = f(C.JOB_PUT, namespace="nope", name="a", spec=SPEC)
    assert r["error"] == {"code": "not_found", "message": "namespace 'nope' not found",
                          "field": "namespace"}


def test_idempotent_retry_applies_once_and_answers_the_same() -> None:
    f = Feeder()
    first = f(C.JOB_PUT, idem="k1", namespace="default", name="web", spec=SPEC)
    f(C.JOB_SCALE, namespace="default", name="web", count=5)
    again = f(C.JOB_PUT, idem="k1", namespace="default", name="web", spec=SPEC)
    assert again["replayed"] is True
    again.pop("replayed")
    assert again == first
    assert f.m.jobs[("default", "web")].spec.count == 5
    clash = f(C.JOB_PUT, idem="k1", namespace="default", name="other", spec=SPEC)
    assert clash["error"]["code"] == "conflict"


def test_placement_recheck_never_oversubscribes() -> None:
    f = Feeder()
    f(C.NODE_REGISTER, name="n1", cpu=1.0, memory_mb=1000, address="")
    f(C.JOB_PUT, namespace="default", name="web", spec={**SPEC, "count": 3})
    ids = sorted(a.id for a in f.m.pending_allocs())
    # Two planners that both saw an empty node: only what fits is accepted.
    r1 = f(C.PLAN, placements=[[ids[0], "n1"], [ids[1], "n1"]])
    r2 = f(C.PLAN, placements=[[ids[2], "n1"]])
    assert r1["placed"] == ids[:2]
    assert r2["rejected"] == [[ids[2], "node has no room"]]
    assert f.m.node_free(f.m.nodes["n1"]) == (0.0, 800)


def test_node_down_loses_allocations_and_creates_replacements() -> None:
    f = Feeder()
    f(C.NODE_REGISTER, name="n1", cpu=4.0, memory_mb=4000, address="")
    f(C.JOB_PUT, namespace="default", name="web", spec=SPEC)
    ids = [a.id for a in f.m.pending_allocs()]
    f(C.PLAN, placements=[[i, "n1"] for i in ids])
    f(C.ALLOC_UPDATE, node="n1", updates=[{"id": i, "state": "running", "pid": 10} for i in ids])
    assert f.m.job_counts(f.m.jobs[("default", "web")])["running"] == 2
    f(C.NODE_STATUS, name="n1", status="down")
    assert all(f.m.allocs[i].state == "lost" for i in ids)
    assert len(f.m.pending_allocs()) == 2
    # A late report from the cut-off node changes nothing.
    r = f(C.ALLOC_UPDATE, node="n1", updates=[{"id": ids[0], "state": "running", "pid": 10}])
    assert r["ignored"] == [ids[0]]


def test_delete_waits_for_processes_then_removes_job() -> None:
    f = Feeder()
    f(C.NODE_REGISTER, name="n1", cpu=4.0, memory_mb=4000, address="")
    f(C.JOB_PUT, namespace="default", name="web", spec=SPEC)
    ids = [a.id for a in f.m.pending_allocs()]
    f(C.PLAN, placements=[[ids[0], "n1"]])
    f(C.JOB_DELETE, namespace="default", name="web")
    assert ("default", "web") in f.m.jobs  # one process may still run
    assert f.m.allocs[ids[1]].state == "stopped"
    f(C.ALLOC_UPDATE, node="n1", updates=[{"id": ids[0], "state": "stopped"}])
    assert ("default", "web") not in f.m.jobs
    assert not f.m.allocs


def test_spec_change_makes_new_version_and_replaces_instances() -> None:
    f = Feeder()
    f(C.JOB_PUT, namespace="default", name="web", spec=SPEC)
    r = f(C.JOB_PUT, namespace="default", name="web", spec={**SPEC, "count": 3})
    assert r["job"]["version"] == 1  # count alone is a scale
    r = f(C.JOB_PUT, namespace="default", name="web", spec={**SPEC, "env": {"A": "1"}})
    assert r["job"]["version"] == 2
    live = [a for a in f.m.allocs.values() if a.desired == "run"]
    assert len(live) == 2 and all(a.version == 2 for a in live)
    same = f(C.JOB_PUT, namespace="default", name="web", spec={**SPEC, "env": {"A": "1"}})
    assert same["changed"] is False and same["job"]["version"] == 2


def test_snapshot_round_trip() -> None:
    f = Feeder()
    f(C.NS_PUT, name="team", quota={"cpu": 8.0})
    f(C.NODE_REGISTER, name="n1", cpu=4.0, memory_mb=4000, address="http://x")
    f(C.JOB_PUT, idem="k", namespace="team", name="web", spec=SPEC)
    f(C.PLAN, placements=[[a.id, "n1"] for a in f.m.pending_allocs()])
    restored = StateMachine()
    restored.restore(f.m.snapshot())
    assert restored.snapshot() == f.m.snapshot()
    # And it keeps working identically afterwards.
    g = Feeder(restored)
    g.index, g.ts = f.index, f.ts
    cmd = dict(namespace="team", name="web", count=4)
    assert f(C.JOB_SCALE, **cmd) == g(C.JOB_SCALE, **cmd)
    assert f.m.digest() == g.m.digest()


ops = st.one_of(
    st.builds(lambda n, c: (C.JOB_PUT, {"namespace": "default", "name": n,
                                       "spec": {**SPEC, "count": c}}),
              st.sampled_from(["a", "b", "c"]), st.integers(0, 4)),
    st.builds(lambda n, c: (C.JOB_SCALE, {"namespace": "default", "name": n, "count": c}),
              st.sampled_from(["a", "b", "c"]), st.integers(-1, 4)),
    st.builds(lambda n: (C.JOB_DELETE, {"namespace": "default", "name": n}),
              st.sampled_from(["a", "b", "c"])),
    st.builds(lambda q: (C.NS_PUT, {"name": "default", "quota": {"processes": q}}),
              st.one_of(st.none(), st.integers(0, 8))),
    st.builds(lambda n: (C.NODE_REGISTER, {"name": n, "cpu": 2.0, "memory_mb": 500,
                                           "address": ""}), st.sampled_from(["n1", "n2"])),
    st.builds(lambda n, s: (C.NODE_STATUS, {"name": n, "status": s}),
              st.sampled_from(["n1", "n2"]), st.sampled_from(["ready", "down"])),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=30))
def test_determinism_and_quota_invariant(seq: list[tuple[str, dict[str, Any]]]) -> None:
    a, b = Feeder(), Feeder()
    for op, args in seq:
        ra, rb = a(op, **args), b(op, **args)
        assert ra == rb
        # Plan whatever is pending, as the leader would.
        pend = [[x.id, "n1"] for x in a.m.pending_allocs()]
        a(C.PLAN, placements=pend)
        b(C.PLAN, placements=pend)
        assert a.m.usage == {k: v for k, v in a.m.recompute_usage().items()} or \
            all(v == (0, 0, 0) for k, v in a.m.usage.items() if k not in a.m.recompute_usage())
        index = {n: set(ids) for n, ids in a.m.on_node.items() if ids}
        actual: dict[str, set[str]] = {}
        for x in a.m.allocs.values():
            if x.node is not None:
                actual.setdefault(x.node, set()).add(x.id)
        assert index == actual
        # The other indexes agree with the table, in the table's order.
        s = a.m.store
        by_job: dict[tuple[str, str], list[str]] = {}
        for x in a.m.allocs.values():
            by_job.setdefault((x.namespace, x.job), []).append(x.id)
        assert {k: list(v) for k, v in s.by_job.items()} == by_job
        pending: dict[tuple[str, str], list[str]] = {}
        for x in a.m.allocs.values():
            if x.state == "pending" and x.node is None and x.desired == "run":
                pending.setdefault((x.namespace, x.job), []).append(x.id)
        assert {k: list(v) for k, v in s.pending.items()} == pending
        restored = StateMachine()
        restored.restore(a.m.snapshot())
        for n in a.m.nodes.values():
            assert restored.node_free(n) == a.m.node_free(n)
        assert restored.namespace_usage("default") == a.m.namespace_usage("default")
        quota = a.m.namespaces["default"].processes
        if quota is not None:
            assert a.m.namespace_usage("default").processes <= quota
        for node in a.m.nodes.values():
            cpu, mem = a.m.node_free(node)
            assert cpu >= -1e-9 and mem >= 0
    assert a.m.snapshot() == b.m.snapshot()


def test_a_bug_in_a_handler_marks_the_replica_broken(monkeypatch) -> None:
    from hacontrol.state.handlers import HANDLERS

    def boom(tx, args):  # a handler that fails half way through
        tx.store.alloc_seq += 1
        raise RuntimeError("bug")
    monkeypatch.setitem(HANDLERS, C.NOOP, boom)
    f = Feeder()
    r = f(C.NOOP)
    assert r["ok"] is False and r["error"]["code"] == "internal"
    assert f.m.broken and "entry 1" in f.m.broken


def test_dependency_cycles_are_refused_within_a_namespace_only() -> None:
    f = Feeder()
    batch = {"command": ["true"], "type": "batch", "count": 0}
    assert f(C.JOB_PUT, namespace="default", name="a", spec={**batch, "depends_on": ["b"]})["ok"]
    assert f(C.JOB_PUT, namespace="default", name="b", spec={**batch, "depends_on": ["c"]})["ok"]
    r = f(C.JOB_PUT, namespace="default", name="c", spec={**batch, "depends_on": ["a"]})
    assert r["error"]["field"] == "depends_on" and "cycle" in r["error"]["message"]
    r = f(C.JOB_PUT, namespace="default", name="d", spec={**batch, "depends_on": ["d"]})
    assert r["error"]["field"] == "depends_on"
    assert f(C.NS_PUT, name="other", quota={})["ok"]
    # The same names in another namespace are other jobs: no cycle.
    assert f(C.JOB_PUT, namespace="other", name="c", spec={**batch, "depends_on": ["a"]})["ok"]
    assert f(C.JOB_PUT, namespace="default", name="c", spec={**batch, "depends_on": []})["ok"]
