"""GROUP entries: concurrent writes proposed as one log entry, applied one by one with a
result each, exactly as if each were an entry of its own at that index."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from hacontrol.controller.replica import Grouper, _group_key
from hacontrol.model import protocol
from hacontrol.raft.bridge import NotApplied
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .test_state_machine import Feeder

SPEC = {"command": ["sleep", "1"], "count": 0}


def _cmd(op: str, idem: str | None = None, ts: float = 2000.0, **args: Any) -> bytes:
    return C.Command(op, ts, args, idem, None, protocol.PROTOCOL).encode()


MEMBERS = [
    _cmd(C.JOB_PUT, "k1", namespace="default", name="a", spec=SPEC),
    _cmd(C.JOB_SCALE, "k2", namespace="default", name="a", count=0),
    _cmd(C.JOB_SCALE, "k3", namespace="default", name="missing", count=1),  # refused
    _cmd(C.JOB_PUT, "k1", namespace="default", name="a", spec=SPEC),  # a retry: replayed
    _cmd(C.JOB_PUT, "k1", namespace="default", name="b", spec=SPEC),  # key reused: refused
    b"\x93garbage",  # undecodable: refused alone
    _cmd(C.JOB_PUT, None, namespace="default", name="b", spec={**SPEC, "count": 1}),
]


def _machines() -> tuple[StateMachine, StateMachine]:
    a, b = Feeder(), Feeder()
    for f in (a, b):
        f(C.JOB_PUT, namespace="default", name="x", spec=SPEC)
    return a.m, b.m


def test_a_group_applies_like_its_members_one_by_one_at_its_index() -> None:
    grouped, single = _machines()
    index = grouped.index + 1
    out = grouped.apply(C.encode_group(3000.0, MEMBERS, protocol.PROTOCOL), index)
    expected = []
    for raw in MEMBERS:
        res = single.apply(raw, index)
        expected.append(res)
    assert out == {"ok": True, "index": index, "results": expected}
    assert [r["ok"] for r in out["results"]] == [True, True, False, True, False, False, True]
    assert out["results"][3].get("replayed") is True
    assert out["results"][4]["error"]["field"] == "Idempotency-Key"
    assert grouped.digest() == single.digest()
    assert grouped.jobs[("default", "b")].spec.count == 1


def test_a_malformed_group_is_refused_whole_and_changes_nothing() -> None:
    m, ref = _machines()
    for args in ({"commands": []}, {"commands": "x"}, {"commands": [1]},
                 {"commands": [MEMBERS[0]] * (C.MAX_GROUP + 1)}):
        raw = msgpack.packb({"op": C.GROUP, "ts": 1.0, "idem": None, "args": args})
        res = m.apply(raw, m.index + 1)
        assert res["ok"] is False and res["error"]["field"] == "commands", res
        ref.apply(_cmd(C.NOOP), ref.index + 1)
    nested = C.encode_group(1.0, [C.encode_group(1.0, [MEMBERS[0]], 2)], 2)
    res = m.apply(nested, m.index + 1)
    ref.apply(_cmd(C.NOOP), ref.index + 1)
    assert res["results"][0]["ok"] is False
    assert m.digest() == ref.digest()


class LogFake:
    """A bridge applying each submitted entry to a machine, recording the entries."""

    def __init__(self, fail: bool = False) -> None:
        self.m = Feeder().m
        self.entries: list[bytes] = []
        self.fail = fail

    async def submit(self, raw: bytes, timeout: float) -> Any:
        await asyncio.sleep(0)
        if self.fail:
            raise NotApplied("no leader known")
        self.entries.append(raw)
        return self.m.apply(raw, len(self.entries) + 10)


def _writes(n: int, first: int = 0) -> list[tuple[bytes, tuple[str, str]]]:
    return [(_cmd(C.JOB_PUT, f"w{i}", namespace="default", name=f"j{i}", spec=SPEC),
             ("default", f"j{i}")) for i in range(first, first + n)]


def test_concurrent_writes_go_as_one_entry_and_each_gets_its_own_result() -> None:
    log = LogFake()
    grouper = Grouper(log, lambda: True, protocol.PROTOCOL)  # type: ignore[arg-type]

    async def go() -> list[Any]:
        return await asyncio.gather(*(grouper.submit(raw, 5.0, key) for raw, key in _writes(5)))
    results = asyncio.run(go())
    assert len(log.entries) == 1 and C.decode(log.entries[0]).op == C.GROUP
    assert [r["job"]["name"] for r in results] == [f"j{i}" for i in range(5)]
    assert all(r["ok"] and r["index"] == 11 for r in results)


def test_a_lone_write_and_a_cluster_without_groups_use_plain_entries() -> None:
    log = LogFake()
    allowed = [True]
    grouper = Grouper(log, lambda: allowed[0], protocol.PROTOCOL)  # type: ignore[arg-type]

    async def go(n: int, first: int) -> list[Any]:
        return await asyncio.gather(*(grouper.submit(raw, 5.0, key) for raw, key in _writes(n, first)))
    asyncio.run(go(1, 0))
    allowed[0] = False  # a voter does not know GROUP yet
    results = asyncio.run(go(3, 1))
    assert [C.decode(e).op for e in log.entries] == [C.JOB_PUT] * 4
    assert [r["index"] for r in results] == [12, 13, 14]


def test_a_group_not_applied_fails_every_writer_as_not_applied() -> None:
    grouper = Grouper(LogFake(fail=True), lambda: True,  # type: ignore[arg-type]
                      protocol.PROTOCOL)

    async def go() -> list[Any]:
        return await asyncio.gather(*(grouper.submit(raw, 5.0, key) for raw, key in _writes(3)),
                                    return_exceptions=True)
    out = asyncio.run(go())
    assert all(isinstance(e, NotApplied) for e in out)
    assert len({id(e) for e in out}) == 3


def test_two_changes_of_one_job_never_share_an_entry_and_other_types_go_alone() -> None:
    # Each change's modify_index is its entry's index, and check_index compares it as a
    # version: two changes of one job in one entry would carry the same one.
    log = LogFake()
    grouper = Grouper(log, lambda: True, protocol.PROTOCOL)  # type: ignore[arg-type]
    a, b = ("default", "a"), ("default", "b")
    writes = [(_cmd(C.JOB_PUT, "p1", namespace="default", name="a", spec=SPEC), a),
              (_cmd(C.JOB_PUT, "p2", namespace="default", name="b", spec=SPEC), b),
              (_cmd(C.JOB_SCALE, "p3", namespace="default", name="a", count=1), a),
              (_cmd(C.NS_PUT, "p4", name="other"), None)]

    async def go() -> list[Any]:
        return await asyncio.gather(*(grouper.submit(raw, 5.0, key) for raw, key in writes))
    results = asyncio.run(go())
    assert all(r["ok"] for r in results), results
    groups = [C.decode(e) for e in log.entries]
    assert sorted(g.op for g in groups) == sorted([C.GROUP, C.JOB_SCALE, C.NS_PUT])
    group = next(g for g in groups if g.op == C.GROUP)
    assert group.args["commands"] == [writes[0][0], writes[1][0]]
    indexes = [r["index"] for r in results]
    assert indexes[0] == indexes[1] and len(set(indexes)) == 3
    job = log.m.jobs[a]
    assert job.modify_index == indexes[2] and job.spec.count == 1


def test_a_writer_cancelled_while_gathering_leaves_the_others_proposed() -> None:
    log = LogFake()
    grouper = Grouper(log, lambda: True, protocol.PROTOCOL)  # type: ignore[arg-type]

    async def go() -> list[Any]:
        tasks = [asyncio.ensure_future(grouper.submit(raw, 5.0, key))
                 for raw, key in _writes(3)]
        await asyncio.sleep(0)  # each has joined; the first is gathering
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)
    out = asyncio.run(go())
    assert isinstance(out[0], asyncio.CancelledError)
    assert [r["job"]["name"] for r in out[1:]] == ["j1", "j2"]
    assert ("default", "j0") not in log.m.jobs


def _node_world() -> Feeder:
    """Three nodes, each running two instances of one job."""
    f = Feeder()
    for n in ("n1", "n2", "n3"):
        f(C.NODE_REGISTER, name=n, cpu=4.0, memory_mb=4096, address="", labels={},
          attributes={})
    f(C.JOB_PUT, namespace="default", name="web", spec={**SPEC, "count": 6})
    ids = sorted(a.id for a in f.m.pending_allocs())
    f(C.PLAN, placements=[[i, f"n{k % 3 + 1}"] for k, i in enumerate(ids)], evictions=[])
    return f


def _reports(m: StateMachine, node: str, state: str) -> bytes:
    updates = [{"id": a.id, "state": state, "pid": 100 + k}
               for k, a in enumerate(m.node_allocs(node))]
    return _cmd(C.ALLOC_UPDATE, None, node=node, updates=updates)


def test_nodes_reports_share_an_entry_and_apply_as_one_by_one() -> None:
    grouped, single = _node_world(), _node_world()
    assert grouped.m.digest() == single.m.digest()
    members = [_reports(grouped.m, "n1", "running"), _reports(grouped.m, "n2", "running"),
               _cmd(C.NODE_REGISTER, None, name="n4", cpu=2.0, memory_mb=1024, address="",
                    labels={}, attributes={}),
               _reports(grouped.m, "n3", "failed")]
    index = grouped.index + 1
    out = grouped.m.apply(C.encode_group(3000.0, members, protocol.PROTOCOL), index)
    expected = [single.m.apply(raw, index) for raw in members]
    assert out == {"ok": True, "index": index, "results": expected}
    assert [r.get("updated") for r in expected] == [2, 2, None, 2]
    assert grouped.m.digest() == single.m.digest()


def test_a_nodes_two_reports_never_share_an_entry_nor_a_node_a_jobs() -> None:
    f = _node_world()
    n1 = _group_key(C.ALLOC_UPDATE, {"node": "n1", "updates": []})
    assert n1 == _group_key(C.NODE_REGISTER, {"name": "n1"})
    assert n1 != _group_key(C.ALLOC_UPDATE, {"node": "n2", "updates": []})
    assert n1 != _group_key(C.JOB_PUT, {"namespace": "node", "name": "n1"})
    # Only a job in a namespace named as a node key's first part would share n1's key,
    # and no namespace may have that name.
    res = f(C.NS_PUT, name="node:")
    assert res["ok"] is False and res["error"]["field"] == "namespace", res

    class Recording(LogFake):
        def __init__(self, m: StateMachine, index: int) -> None:
            super().__init__()
            self.m, self.base = m, index

        async def submit(self, raw: bytes, timeout: float) -> Any:
            await asyncio.sleep(0)
            self.entries.append(raw)
            return self.m.apply(raw, self.base + len(self.entries))

    log = Recording(f.m, f.index)
    grouper = Grouper(log, lambda: True, protocol.PROTOCOL)  # type: ignore[arg-type]
    writes = [(_reports(f.m, "n1", "running"), n1),
              (_reports(f.m, "n2", "running"), _group_key(C.ALLOC_UPDATE, {"node": "n2"})),
              (_reports(f.m, "n1", "failed"), n1)]

    async def go() -> list[Any]:
        return await asyncio.gather(*(grouper.submit(raw, 5.0, key) for raw, key in writes))
    results = asyncio.run(go())
    assert all(r["ok"] and r["updated"] == 2 for r in results), results
    entries = [C.decode(e) for e in log.entries]
    assert [e.op for e in entries] == [C.GROUP, C.ALLOC_UPDATE]
    assert entries[0].args["commands"] == [writes[0][0], writes[1][0]]
    assert {a.state for a in f.m.node_allocs("n1")} == {"failed"}
