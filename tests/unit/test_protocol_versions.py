"""Protocol versions: what each message carries, what readers of either version make of
it, the rule that gates new command types, and the restart notice an agent leaves."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from hacontrol.controller.versions import (
    ASSUMED,
    Capabilities,
    CapabilityWatch,
    Vouch,
    local,
    refusal,
)
from hacontrol.model import protocol
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import SyncRequest
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.scheduler.liveness import Heard, judge
from hacontrol.state import commands as C

NODE = {"name": "n1", "cpu": 1.0, "memory_mb": 64}


def test_a_command_carries_its_version_and_one_without_is_version_1() -> None:
    raw = C.Command(C.NOOP, 1.0, {}, "k", v=protocol.PROTOCOL).encode()
    assert msgpack.unpackb(raw)["v"] == protocol.PROTOCOL
    assert C.decode(raw).v == protocol.PROTOCOL
    old = msgpack.packb({"op": C.NOOP, "ts": 1.0, "idem": None, "args": {}})
    assert C.decode(old).v == 1
    # What protocol 1 wrote is byte for byte what a version-1 command still encodes to.
    assert C.Command(C.NOOP, 1.0, {}).encode() == old


def test_fields_a_reader_does_not_know_are_ignored() -> None:
    raw = msgpack.packb({"op": C.NOOP, "ts": 1.0, "idem": None, "args": {}, "v": 9,
                         "later": {"x": 1}})
    assert C.decode(raw).v == 9
    newer_op = msgpack.packb({"op": "from_the_future", "ts": 1.0, "idem": None, "args": {},
                              "v": 9})
    with pytest.raises(Rejection, match="proposed by protocol 9"):
        C.decode(newer_op)


def test_protocol_1_ops_are_never_taken_away() -> None:
    assert C.PROTOCOL1_OPS <= C.OPS


def test_a_new_op_waits_for_every_voter() -> None:
    new = Capabilities(2, frozenset(C.OPS | {"x_new"}))
    old = Capabilities(2, frozenset(C.OPS))
    assert refusal("x_new", {"c1": new, "c2": new, "c3": new}) is None
    reason = refusal("x_new", {"c1": new, "c2": old, "c3": None})
    assert reason is not None and "c2 (protocol 2), c3 (protocol 1)" in reason
    # Every voter knows the ops of protocol 1, heard from or not.
    assert refusal(C.JOB_PUT, {"c1": new, "c2": None}) is None


def test_reports_as_status_carries_them() -> None:
    assert Capabilities.of_status({"id": "c2", "role": "follower"}) == ASSUMED
    assert Capabilities.of_status({"protocol": 2, "ops": ["noop", 3]}) == \
        Capabilities(2, frozenset({"noop"}))
    assert Capabilities.of_status("garbage") == ASSUMED


def test_pretending_only_takes_away(monkeypatch: pytest.MonkeyPatch) -> None:
    assert local() == Capabilities(protocol.PROTOCOL, frozenset(C.CAPABILITIES))
    monkeypatch.setenv(protocol.PRETEND_WITHOUT_OPS_ENV, "ns_put, job_scale")
    assert local().ops == C.CAPABILITIES - {"ns_put", "job_scale"}
    monkeypatch.setenv(protocol.PRETEND_PROTOCOL_ENV, "1")
    assert local().protocol == 1 and not protocol.versioned()
    assert protocol.stamped({}) == {}
    monkeypatch.setenv(protocol.PRETEND_PROTOCOL_ENV, "99")
    assert protocol.spoken() == protocol.PROTOCOL


def test_a_sync_request_of_either_version() -> None:
    assert SyncRequest.from_dict({"node": NODE}).protocol == 1
    req = SyncRequest.from_dict({"node": NODE, "protocol": 2, "restarting_s": 30})
    assert req.protocol == 2 and req.restarting_s == 30.0
    assert SyncRequest.from_dict(req.to_dict()) == req
    with pytest.raises(Rejection) as err:
        SyncRequest.from_dict({"node": NODE, "restarting_s": 1e6})
    assert err.value.field == "restarting_s"


def test_a_node_restarting_as_announced_is_not_marked_down() -> None:
    leader = LeaderState(term=1, since=0.0)
    leader.record_heartbeat("n1", now=10.0)
    leader.record_heartbeat("n2", now=10.0)
    leader.restart_announced("n1", 30.0, now=10.0)

    def down(now: float) -> list[str]:
        return judge(["n1", "n2"], Heard(leader.contact(now)), 0.0, now, 3.0).down
    assert down(20.0) == ["n2"]  # n2 went silent; n1 said it would be back
    assert down(44.0) == ["n1", "n2"]  # not back in time: judged as any silent node
    assert leader.restarting == {}


def test_a_spec_section_newer_than_a_voter_waits_like_a_command_type() -> None:
    plain = parse_job_spec({"command": ["sleep", "1"]}).to_dict()
    assert C.spec_features(C.JOB_PUT, {"spec": plain}) == []
    ported = parse_job_spec({"command": ["sleep", "1"], "ports": [{"name": "http"}],
                             "services": [{"name": "web", "port": "http"}]}).to_dict()
    assert C.spec_features(C.JOB_PUT, {"spec": ported}) == [C.SPEC_PORTS, C.SPEC_SERVICES]
    assert C.spec_features(C.JOB_SCALE, {"spec": ported}) == []
    knows = Capabilities(2, frozenset(C.CAPABILITIES))
    lacks = Capabilities(2, frozenset(C.CAPABILITIES - {C.SPEC_PORTS}))
    assert refusal(C.SPEC_PORTS, {"c1": knows, "c2": knows}) is None
    reason = refusal(C.SPEC_PORTS, {"c1": knows, "c2": lacks})
    assert reason is not None and "job spec section 'ports'" in reason and "c2" in reason
    # A replica not heard from yet counts as protocol 1, which knows none of them.
    assert refusal(C.SPEC_SERVICES, {"c1": knows, "c2": None}) is not None


def test_a_refusal_only_for_a_voter_not_heard_from_waits_for_its_report() -> None:
    voters = {"c1": "http://c1", "c2": "http://c2"}
    watch = CapabilityWatch("c1", lambda: voters)

    async def scenario() -> tuple[str | None, str | None]:
        async def report_later() -> None:
            await asyncio.sleep(0.2)
            watch.reports["c2"] = Capabilities(2, frozenset(C.CAPABILITIES))
        later = asyncio.create_task(report_later())
        heard = await watch.settled_refusal(C.STATE_RESTORE, wait_s=5.0)
        await later
        # A voter heard from that does not know it is refused at once, without waiting.
        watch.reports["c2"] = ASSUMED
        return heard, await watch.settled_refusal(C.STATE_RESTORE, wait_s=60.0)

    heard, old = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert heard is None
    assert old is not None and "c2 (protocol 1)" in old
    # Never heard from: refused once the wait is over.
    del watch.reports["c2"]
    assert asyncio.run(watch.settled_refusal(C.STATE_RESTORE, wait_s=0.1)) is not None


def test_a_voter_not_heard_from_is_vouched_for_by_a_peer_that_heard_it() -> None:
    """A replica restarted while c3 was down never hears c3 itself; c2 did, and says so."""
    voters = {"c1": "http://c1", "c2": "http://c2", "c3": "http://c3"}
    watch = CapabilityWatch("c1", lambda: voters)
    full = Capabilities(2, frozenset(C.CAPABILITIES))
    watch.reports["c2"] = full
    assert watch.refusal(C.STATE_RESTORE) is not None
    heard_all = {"protocol": 2, "ops": sorted(C.CAPABILITIES),
                 "member_protocols": {"c1": 2, "c2": 2, "c3": 2}, "ops_waiting": []}
    watch.vouched["c2"] = Vouch.of_status(heard_all, full)
    assert watch.refusal(C.STATE_RESTORE) is None
    # A peer that has not heard c3 either, or heard it lack the op, vouches for nothing.
    for told in ({**heard_all, "member_protocols": {"c1": 2, "c2": 2, "c3": None},
                  "ops_waiting": sorted(C.CAPABILITIES - C.PROTOCOL1_OPS)},
                 {**heard_all, "member_protocols": {"c1": 2, "c2": 2, "c3": 1}},
                 {**heard_all, "ops_waiting": [C.STATE_RESTORE]},
                 {"protocol": 2, "ops": sorted(C.CAPABILITIES)}):
        watch.vouched["c2"] = Vouch.of_status(told, full)
        assert watch.refusal(C.STATE_RESTORE) is not None, told
    # A voter heard first-hand to lack the op is refused whatever a peer says.
    watch.vouched["c2"] = Vouch.of_status(heard_all, full)
    watch.reports["c3"] = ASSUMED
    assert watch.refusal(C.STATE_RESTORE) is not None
