"""The snapshot file (header, body, checksum) and the restore command, fed plain data."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
import pytest

from hacontrol.acl.secrets import hash_secret, new_accessor, new_secret
from hacontrol.state import backup
from hacontrol.state import commands as C
from hacontrol.state import snapshot as snap
from hacontrol.state.dispatch import IdempotencyTable
from hacontrol.state.machine import StateMachine

SPEC = {"command": ["sleep", "100"], "count": 2, "resources": {"cpu": 0.1, "memory_mb": 10}}
NODE = {"cpu": 4.0, "memory_mb": 4096, "address": "http://127.0.0.1:1", "labels": {},
        "attributes": {}}


class Feeder:
    def __init__(self) -> None:
        self.m = StateMachine()
        self.index = 0

    def __call__(self, op: str, acc: str | None = None, **args: Any) -> dict[str, Any]:
        self.index += 1
        return self.m.apply(C.Command(op, 1000.0 + self.index, args, None, acc).encode(),
                            self.index)


def populated(jobs: int = 5, prefix: str = "job") -> tuple[Feeder, str]:
    f = Feeder()
    root = new_accessor()
    assert f(C.ACL_BOOTSTRAP, None, accessor_id=root, secret_hash=hash_secret("s"),
             name="bootstrap")["ok"]
    assert f(C.NS_PUT, root, name="team", quota={"cpu": 8, "memory_mb": 4096})["ok"]
    assert f(C.NODE_REGISTER, None, name="n1", **NODE)["ok"]
    for i in range(jobs):
        ns = "team" if i % 2 else "default"
        assert f(C.JOB_PUT, root, namespace=ns, name=f"{prefix}{i}", spec=SPEC)["ok"]
        assert f(C.JOB_PUT, root, namespace=ns, name=f"{prefix}{i}",
                 spec={**SPEC, "env": {"V": "2"}})["ok"]
    pending = [a.id for a in f.m.pending_allocs()]
    assert f(C.PLAN, None, placements=[[a, "n1"] for a in pending])["ok"]
    return f, root


def file_of(m: StateMachine, term: int = 3) -> bytes:
    state = snap.encode(m.store, IdempotencyTable())
    return backup.pack(state, m.index, term, backup.counts_of(msgpack.unpackb(state)),
                       created_at=1.0, source="c1")


def restore_args(data: bytes) -> dict[str, Any]:
    b = backup.unpack(data)
    return {"state": b.body, "index": b.index}


def tables(m: StateMachine) -> dict[str, Any]:
    d: dict[str, Any] = msgpack.unpackb(snap.encode(m.store, IdempotencyTable()))
    for k in ("index", "alloc_seq", "idempotency"):
        d.pop(k)
    return d


# ------------------------------------------------------------------ the file

def test_file_round_trip_and_counts() -> None:
    f, _ = populated()
    data = file_of(f.m)
    b = backup.unpack(data)
    assert (b.index, b.term, b.source, b.size) == (f.index, 3, "c1", len(data))
    assert b.counts == {"namespaces": 2, "jobs": 5, "allocations": len(f.m.allocs), "nodes": 1,
                        "tokens": 1, "policies": 0}
    t = backup.state_tables(b)
    assert len(t["jobs"]) == 5


@pytest.mark.parametrize("where", ["magic", "length", "header", "body", "trailer"])
def test_a_flipped_byte_anywhere_is_refused(where: str) -> None:
    f, _ = populated()
    data = bytearray(file_of(f.m))
    header_end = len(backup.MAGIC) + 4 + int.from_bytes(data[8:12], "big")
    at = {"magic": 2, "length": 11, "header": header_end - 3,
          "body": header_end + 40, "trailer": len(data) - 5}[where]
    data[at] ^= 0x01
    with pytest.raises(backup.DamagedSnapshot):
        backup.unpack(bytes(data))


def test_truncated_or_extended_files_are_refused_and_said_so() -> None:
    f, _ = populated()
    data = file_of(f.m)
    for cut in (0, 5, 12, 30, len(data) // 2, len(data) - 1):
        with pytest.raises(backup.DamagedSnapshot, match="truncated|magic|damaged"):
            backup.unpack(data[:cut])
    with pytest.raises(backup.DamagedSnapshot, match="truncated"):
        backup.unpack(data[:-1])
    with pytest.raises(backup.DamagedSnapshot, match="after the end"):
        backup.unpack(data + b"x")
    with pytest.raises(backup.DamagedSnapshot, match="magic"):
        backup.unpack(b"PK\x03\x04" + data[4:])


def test_a_deflate_bomb_stops_at_the_bound() -> None:
    bomb = zlib.compress(b"\0" * (4 * 1024 * 1024), 9)
    with pytest.raises(backup.DamagedSnapshot, match="beyond"):
        backup.inflate(bomb, limit=1024 * 1024)
    assert len(backup.inflate(bomb)) == 4 * 1024 * 1024
    with pytest.raises(backup.DamagedSnapshot):
        backup.inflate(bomb[:-4])


# ------------------------------------------------------------- the command

def test_restore_replaces_the_state_as_one_entry_on_every_replica() -> None:
    source, _ = populated(jobs=6)
    data = file_of(source.m)
    replicas = []
    for _ in range(2):  # two replicas holding the same other state apply the same entry
        target, root = populated(jobs=9, prefix="other")
        seq_before = target.m.alloc_seq
        r = target(C.STATE_RESTORE, root, **restore_args(data))
        assert r["ok"], r
        assert r["restored"]["jobs"] == 6 and r["restored"]["source_index"] == source.index
        replicas.append(target)
        assert tables(target.m) == tables(source.m)
        assert target.m.index == target.index  # the log's index, not the snapshot's
        assert target.m.alloc_seq == max(seq_before, source.m.alloc_seq)
        # Agents get everything on their next sync, and their long polls wake.
        assert target.m.store.removed_since("n1", target.index - 1) is None
        assert "n1" in target.m.store.touched_nodes
        assert target.m.recompute_usage() == target.m.usage
        assert [e["type"] for e in target.m.events][-1] == "state_restored"
    assert replicas[0].m.digest() == replicas[1].m.digest()


@pytest.mark.parametrize("state", [b"garbage", zlib.compress(b"\x93\x01\x02\x03"),
                                   zlib.compress(msgpack.packb({"v": 1, "jobs": 3})), None])
def test_a_bad_body_is_refused_and_changes_nothing(state: Any) -> None:
    target, root = populated()
    before = tables(target.m)
    r = target(C.STATE_RESTORE, root, state=state, index=1)
    assert not r["ok"] and r["error"]["code"] == "invalid"
    assert r["error"]["field"] == "state"
    assert tables(target.m) == before
    assert target.m.broken is None


def test_a_snapshot_without_access_control_cannot_unlock_the_cluster() -> None:
    source = Feeder()  # never bootstrapped: no tokens, no policies
    assert source(C.NS_PUT, None, name="team", quota={})["ok"]
    assert not source.m.acl_bootstrapped
    target, root = populated(jobs=1)
    before = tables(target.m)
    r = target(C.STATE_RESTORE, root, **restore_args(file_of(source.m)))
    assert r["error"]["field"] == "state" and "open" in r["error"]["message"], r
    assert tables(target.m) == before and target.m.acl_bootstrapped


def test_rows_named_twice_are_refused() -> None:
    source, _ = populated(jobs=2)
    d = msgpack.unpackb(snap.encode(source.m.store, IdempotencyTable()))
    d["jobs"].append(d["jobs"][0])
    target, root = populated(jobs=1)
    r = target(C.STATE_RESTORE, root, state=zlib.compress(msgpack.packb(d)), index=1)
    assert r["error"]["field"] == "state" and "twice" in r["error"]["message"]


def test_only_a_token_that_may_write_the_acls_and_the_cluster_may_restore() -> None:
    source, _ = populated(jobs=1)
    args = restore_args(file_of(source.m))
    target, root = populated(jobs=1)
    before = tables(target.m)
    for name, rules in (("ops", {"operator": "write"}), ("acl", {"acl": "write"}),
                        ("all-ns", {"namespaces": {"*": {"policy": "write"}}, "node": "write"})):
        assert target(C.ACL_POLICY_PUT, root, policy={"name": name, "rules": rules})["ok"]
        acc = new_accessor()
        assert target(C.ACL_TOKEN_CREATE, root, accessor_id=acc,
                      secret_hash=hash_secret(new_secret()), name=name, type="client",
                      policies=[name])["ok"]
        r = target(C.STATE_RESTORE, acc, **args)
        assert r["error"]["code"] == "forbidden", (name, r)
    after = tables(target.m)
    after.pop("acl_policies"), after.pop("acl_tokens"), before.pop("acl_policies")
    before.pop("acl_tokens")
    assert after == before
