"""Membership rules (pure), the member book and its record, the entries we write, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hacontrol.controller.membership import peer_rows, removal_refusal
from hacontrol.raft import safety
from hacontrol.raft.membership import MemberBook, MemberInfo, change_payload, read_record
from tests.unit.cli_fake import FakeApi

A, B, C, D, E = (f"10.0.0.{i}:9001" for i in range(1, 6))


def info(addr: str) -> MemberInfo:
    return MemberInfo(f"c{addr.split('.')[3][0]}", addr, f"http://{addr.split(':')[0]}:8080")


def test_removal_is_refused_when_no_live_majority_would_remain() -> None:
    # Three members, C dead: removing the live B leaves {A, C}: one alive, two needed.
    refusal = removal_refusal([A, B, C], {A, B}, B)
    assert refusal is not None and refusal.code == "quorum_at_risk"
    assert refusal.detail == {"alive": 1, "remaining": 2, "needed": 2}
    # Removing the dead C leaves {A, B}, both alive.
    assert removal_refusal([A, B, C], {A, B}, C) is None
    # Five members, D and E dead: removing a live one leaves 2 of 4 alive (3 needed)...
    assert removal_refusal([A, B, C, D, E], {A, B, C}, C) is not None
    # ... removing a dead one leaves 3 of 4.
    assert removal_refusal([A, B, C, D, E], {A, B, C}, E) is None
    last = removal_refusal([A], {A}, A)
    assert last is not None and last.code == "last_member"
    assert removal_refusal([A, B], {A, B}, C) is None  # not a member: nothing to refuse


def test_the_leaders_peer_table() -> None:
    members = [info(A), info(B), info(C)]
    view = {B: (95, 0.02, True), C: (40, 7.5, False)}
    rows = {r["raft"]: r for r in peer_rows(members, A, view, commit=100)}
    assert rows[A]["leader"] and rows[A]["alive"] and rows[A]["index_lag"] == 0
    assert rows[B]["alive"] and rows[B]["index_lag"] == 5 and rows[B]["last_contact_s"] == 0.02
    assert not rows[C]["alive"] and rows[C]["index_lag"] == 60
    assert all(r["voter"] for r in rows.values())


def test_membership_entries_hold_primitives_only() -> None:
    """pysyncobj's addNodeToCluster pickles a TCPNode, which the fence refuses; ours pass."""
    entry = safety.safe_loads(change_payload("add", info(D)))
    assert entry == ["add", D, D, {"id": "c4", "api": "http://10.0.0.4:8080"}]


def test_the_book_follows_appended_and_rolled_back_entries(tmp_path: Path) -> None:
    book = MemberBook(tmp_path, info(A), [info(B), info(C)])
    assert [m.id for m in book.members()] == ["c1", "c2", "c3"] and book.is_member()
    book.on_change(safety.safe_loads(change_payload("add", info(D))), reverse=False)
    assert [m.id for m in book.members()] == ["c1", "c2", "c3", "c4"]
    assert book.by_raft(D) == info(D)
    book.on_change(safety.safe_loads(change_payload("add", info(D))), reverse=True)
    assert D not in {m.raft for m in book.members()}
    book.on_change(["rem", A, A, {"id": "c1", "api": ""}], reverse=False)
    assert not book.is_member() and book.removed
    members, me = read_record(tmp_path) or ([], None)
    assert me == info(A) and {m.raft for m in members} == {B, C}


def test_a_joining_replica_is_no_voter_until_its_entry_arrives(tmp_path: Path) -> None:
    book = MemberBook(tmp_path, info(D), [info(A), info(B), info(C)], joining=True)
    assert not book.is_member()
    book.on_change(["add", D, D, {"id": "c4", "api": info(D).api}], reverse=False)
    assert book.is_member()
    record = json.loads((tmp_path / "members.json").read_text())
    assert {m["id"] for m in record["members"]} == {"c1", "c2", "c3", "c4"}


def test_a_snapshot_replaces_the_configuration(tmp_path: Path) -> None:
    book = MemberBook(tmp_path, info(A), [info(B), info(C)])
    rows = [[E, "c5", "http://10.0.0.5:8080"]]
    book.reset([A, B, E], MemberBook.from_dump_fields(rows))
    assert [m.id for m in book.members()] == ["c1", "c2", "c5"]


def test_a_damaged_record_is_refused(tmp_path: Path) -> None:
    assert read_record(tmp_path) is None
    (tmp_path / "members.json").write_text("{")
    with pytest.raises(ValueError):
        read_record(tmp_path)


PEERS = {"peers": [
    {"id": "c1", "raft": A, "api": "http://10.0.0.1:8080", "voter": True, "leader": True,
     "alive": True, "last_contact_s": 0.0, "index_lag": 0},
    {"id": "c3", "raft": C, "api": "http://10.0.0.3:8080", "voter": True, "leader": False,
     "alive": False, "last_contact_s": 12.5, "index_lag": 300}], "leader": "c1"}


def test_cli_list_peers(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("GET", "/v1/operator/raft/peers", PEERS)
    assert api.run("operator", "raft", "list-peers") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "RAFT", "API", "VOTER", "ROLE", "STATE", "CONTACT", "LAG"]
    assert lines[2].split() == ["c3", C, "http://10.0.0.3:8080", "voter", "follower",
                                "unreachable", "12.50s", "300"]
    assert api.run("operator", "raft", "list-peers", "--json") == 0
    assert json.loads(capsys.readouterr().out) == PEERS


def test_cli_remove_peer(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("DELETE", "/v1/operator/raft/peers/c3",
              {"removed": {"id": "c3", "raft": C, "api": ""}, "index": 9, "forced": True})
    assert api.run("operator", "raft", "remove-peer", "c3", "--force") == 0
    assert api.last.query == {"force": "true"} and "Idempotency-Key" in api.last.headers
    assert "removed c3 (forced)" in capsys.readouterr().out
    api.reply("DELETE", "/v1/operator/raft/peers/c2", {"error": {
        "code": "conflict", "message": "quorum at risk: ...", "field": None,
        "reason": "quorum_at_risk"}}, status=409)
    assert api.run("operator", "raft", "remove-peer", "c2") != 0
    assert "quorum at risk" in capsys.readouterr().err


def test_membership_routes_need_operator_permissions() -> None:
    """Joining hands a stranger every write: only operator:write may add or remove."""
    from tests.unit.test_acl_api import Call, LocalReplica, bootstrap, client_token, session

    def script(call: Call) -> None:
        root = bootstrap(call)
        ro, _ = client_token(call, root, "opr", {"operator": "read"})
        jobs, _ = client_token(call, root, "jobs", {"namespaces": {"*": {"policy": "write"}}})
        me = {"id": "c9", "raft": "10.0.0.9:9001", "api": "http://10.0.0.9:8080"}
        assert call("GET", "/v1/operator/raft/peers")[0] == 401
        assert call("GET", "/v1/operator/raft/peers", token=jobs)[0] == 403
        assert call("POST", "/v1/operator/raft/peers", me, token=jobs)[0] == 403
        assert call("POST", "/v1/operator/raft/peers", me, token=ro)[0] == 403
        assert call("DELETE", "/v1/operator/raft/peers/c1", token=ro)[0] == 403
        # Allowed through: this app has no leader to change anything (503, retry).
        assert call("GET", "/v1/operator/raft/peers", token=ro)[0] == 503
        assert call("POST", "/v1/operator/raft/peers", me, token=root)[0] == 503
        status, body = call("POST", "/v1/operator/raft/peers", {**me, "api": "ftp://x"},
                            token=root)
        assert status == 422 and body["error"]["field"] == "api"
        status, body = call("POST", "/v1/operator/raft/peers", {**me, "extra": 1}, token=root)
        assert status == 422, body
    session(LocalReplica(), script)


def test_autopilot_removes_the_long_dead_never_below_the_minimum() -> None:
    from hacontrol.controller.membership import Autopilot, dead_to_remove

    members = [info(a) for a in (A, B, C, D)]
    view = {B: (100, 0.01, True), C: (100, 0.02, True), D: (10, 45.0, False)}
    rows = peer_rows(members, A, view, commit=100)
    pilot = Autopilot(enabled=True, min_quorum=3, dead_after_s=30.0)
    chosen = dead_to_remove(rows, pilot)
    assert chosen is not None and chosen["raft"] == D
    assert dead_to_remove(rows, Autopilot()) is None  # off by default
    assert dead_to_remove(rows, Autopilot(True, min_quorum=4)) is None  # 3 would remain
    assert dead_to_remove(rows, Autopilot(True, dead_after_s=60.0)) is None  # not long enough
    # Two of four dead: removing one would leave 2 alive of 3 (a majority): allowed; with
    # three dead of five, removing one leaves 2 of 4 alive: refused, as for an operator.
    view5 = {B: (100, 0.01, True), C: (1, 50.0, False), D: (1, 50.0, False),
             E: (1, 50.0, False)}
    rows5 = peer_rows([info(a) for a in (A, B, C, D, E)], A, view5, commit=100)
    assert dead_to_remove(rows5, Autopilot(True, min_quorum=1)) is None
