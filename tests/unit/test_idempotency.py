"""The idempotency table: bounded by count and by bytes, compact, deterministic, and a
retried request still answered as the first time."""

from __future__ import annotations

import asyncio
import json

import msgpack

from hacontrol.state import commands as C
from hacontrol.state.dispatch import (
    RESULT_BYTES_KEPT,
    IdempotencyTable,
    compact_result,
)
from hacontrol.state.machine import StateMachine

from .api_fake import ApplyingReplica, call
from .test_state_machine import Feeder

BIG = {"command": ["sleep", "100"], "count": 1, "resources": {"cpu": 0.01, "memory_mb": 1},
       "env": {f"V{i}": "x" * 3000 for i in range(200)}}  # about 600 KB of spec


def _size(table: IdempotencyTable) -> int:
    return sum(len(msgpack.packb([k, d, r], use_bin_type=True)) for k, d, r in table)


def test_a_big_job_result_is_kept_compact_and_replayed_whole() -> None:
    f = Feeder()
    first = f(C.JOB_PUT, idem="k1", namespace="default", name="big", spec=BIG)
    assert first["ok"], first
    assert len(msgpack.packb(first, use_bin_type=True)) > 500_000
    assert _size(f.m.idem) < RESULT_BYTES_KEPT
    f(C.JOB_SCALE, namespace="default", name="big", count=0)
    again = f(C.JOB_PUT, idem="k1", namespace="default", name="big", spec=BIG)
    assert again.pop("replayed") is True
    assert json.dumps(again) == json.dumps(first)  # key order included, as served


def test_a_replay_after_its_version_is_forgotten_still_names_the_job_and_version() -> None:
    f = Feeder()
    first = f(C.JOB_PUT, idem="k1", namespace="default", name="web", spec=BIG)
    for i in range(12):  # more new versions than the history keeps
        f(C.JOB_PUT, namespace="default", name="web", spec={**BIG, "env": {"N": str(i)}})
    again = f(C.JOB_PUT, idem="k1", namespace="default", name="web", spec=BIG)
    assert again["replayed"] is True
    assert (again["ok"], again["index"], again["changed"]) == (True, first["index"], True)
    assert {k: again["job"][k] for k in ("namespace", "name", "version", "count")} \
        == {k: first["job"][k] for k in ("namespace", "name", "version", "count")}


def test_the_table_is_bounded_by_bytes_and_forgets_the_oldest_first() -> None:
    table = IdempotencyTable(kept=10_000, bytes_kept=50_000)
    for i in range(1000):
        table.put(f"k{i}", "d", {"ok": True, "index": i, "placed": [f"a{j}" for j in range(50)]})
        assert table.bytes <= 50_000
    assert table.bytes == _size(table)
    keys = [k for k, _, _ in table]
    assert keys == [f"k{i}" for i in range(1000 - len(keys), 1000)]
    assert len(keys) > 10


def test_the_kept_results_are_the_same_on_every_replica_and_through_a_snapshot() -> None:
    a, b = Feeder(), Feeder()
    for f in (a, b):
        f(C.JOB_PUT, idem="k1", namespace="default", name="big", spec=BIG)
        f(C.JOB_SCALE, idem="k2", namespace="default", name="big", count=2)
    assert a.m.snapshot() == b.m.snapshot()
    restored = StateMachine()
    restored.restore(a.m.snapshot())
    assert restored.snapshot() == a.m.snapshot()
    assert restored.idem.bytes == a.m.idem.bytes
    assert compact_result(compact_result({"job": {"name": "x", "command": ["y"]}})) \
        == compact_result({"job": {"name": "x", "command": ["y"]}})


def test_the_api_answers_a_retried_put_as_the_first_time() -> None:
    replica = ApplyingReplica()
    body = json.dumps(BIG).encode()
    key = {"Idempotency-Key": "retry-1"}
    s1, _, first = call(replica, "PUT", "/v1/jobs/default/big", body, headers=key)
    s2, _, again = call(replica, "PUT", "/v1/jobs/default/big", body, headers=key)
    assert (s1, s2) == (200, 200)
    assert again == first


def test_many_big_results_cost_the_table_little() -> None:
    f = Feeder()
    for i in range(100):  # kept whole, these were 60 MB
        f(C.JOB_PUT, namespace="default", name=f"j{i}", spec={**BIG, "count": 0})
    assert f.m.idem.bytes < 100 * 1024


def test_a_replayed_drain_of_a_node_with_large_labels_still_answers_the_node() -> None:
    replica = ApplyingReplica()
    labels = {f"k{i}": "v" * 500 for i in range(64)}
    asyncio.run(replica.write(C.NODE_REGISTER, {"name": "n1", "cpu": 1.0, "memory_mb": 100,
                                                "address": "", "labels": labels}))
    body, key = json.dumps({"enable": True}).encode(), {"Idempotency-Key": "drain-1"}
    s1, _, first = call(replica, "POST", "/v1/nodes/n1/drain", body, headers=key)
    s2, _, again = call(replica, "POST", "/v1/nodes/n1/drain", body, headers=key)
    assert (s1, s2) == (200, 200), again
    a, b = json.loads(first), json.loads(again)
    assert (b["node"]["name"], b["node"]["drain"], b["index"]) \
        == (a["node"]["name"], a["node"]["drain"], a["index"])


def test_the_snapshot_splices_the_packed_entries_byte_for_byte() -> None:
    f = Feeder()
    for i in range(40):
        assert f(C.JOB_PUT, idem=f"k{i}", namespace="default", name=f"j{i % 7}",
                 spec={"command": ["sleep", str(i)], "count": 0})["ok"]
    tables = msgpack.unpackb(f.m.snapshot(), raw=False)
    assert len(tables["idempotency"]) == 40
    # What packing the whole map at once gives, entries as plain lists.
    assert f.m.snapshot() == msgpack.packb(tables, use_bin_type=True)
