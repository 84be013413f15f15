"""The CLI client follows the cluster's membership within one invocation: after a replica
stops answering, or none gives a usable answer, it asks an answering replica for the
members (/v1/status), uses the new ones and drops the removed ones, and retries with the
same idempotency key."""

from __future__ import annotations

from typing import Any

import pytest

from hacontrol.cli.client import Client, ClientError, RetryPolicy
from hacontrol.cli.transport import Response

from .cli_fake import FakeApi, Seen, json_response

C = [f"http://10.9.0.{i}:8101" for i in range(1, 7)]


def status(members: list[str], leader: str | None = None, member: bool = True
           ) -> dict[str, Any]:
    return {"id": "x", "member": member, "leader_api": leader,
            "members": [{"id": f"c{C.index(a) + 1}", "raft": "h:1", "api": a}
                        for a in members]}


class Cluster:
    """Which replicas run, and what each lists as members."""

    def __init__(self, api: FakeApi) -> None:
        self.members: list[str] = []
        self.leader: str | None = None
        self.removed: set[str] = set()
        self.busy: set[str] = set()
        api.routes[("GET", "/v1/status")] = self.status
        api.default = self.write

    def status(self, seen: Seen) -> Response:
        if seen.addr in self.removed:
            return json_response(200, status([seen.addr], member=False))
        return json_response(200, status(self.members, self.leader))

    def write(self, seen: Seen) -> tuple[int, Any, dict[str, str]]:
        if seen.addr in self.removed | self.busy:
            return 503, {"error": {"code": "unavailable", "message": "no leader"}}, {}
        if self.leader is not None and seen.addr != self.leader:
            return 307, {}, {"Location": self.leader + seen.raw_path}  # as followers do
        return 200, {"index": 1}, {}


def client(api: FakeApi, addrs: list[str]) -> Client:
    return Client(addrs, token="t", retry=RetryPolicy(attempts=4), sleep=lambda s: None,
                  transport=api.transport)


def writes(api: FakeApi) -> list[Seen]:
    return [s for s in api.seen if s.method == "PUT"]


def test_replaced_one_at_a_time_the_cluster_stays_reachable() -> None:
    """c1..c3 replaced by c4..c6, one join and one removal at a time: a client given
    c1..c3 keeps working throughout, and ends up using only c4..c6."""
    api = FakeApi(urls=C)
    cluster = Cluster(api)
    cluster.members, cluster.leader = C[:3], C[0]
    cli = client(api, C[:3])
    cli.put("/v1/namespaces/a", {})
    for old, new in zip(C[:3], C[3:], strict=True):
        cluster.members = [m for m in cluster.members if m != old] + [new]
        cluster.leader = new
        api.down.add(old)  # removed, then stopped
        cli.request("PUT", "/v1/namespaces/a", body={}, idempotency_key=f"k-{new}")
        last = writes(api)[-1]
        assert last.headers["Idempotency-Key"] == f"k-{new}" and last.addr != old
        assert old not in cli.addrs  # the failover asked who the members are now
    assert cli.addrs == [C[5], C[3], C[4]]  # the leader first
    cli.put("/v1/namespaces/b", {})
    assert writes(api)[-1].addr == C[5]


def test_a_long_invocation_learns_members_while_its_addresses_still_answer() -> None:
    api = FakeApi(urls=C)
    cluster = Cluster(api)
    cluster.members, cluster.leader = C[:3], C[0]
    now = [0.0]
    cli = Client(C[:3], token="t", sleep=lambda s: None, transport=api.transport,
                 clock=lambda: now[0])
    cli.put("/v1/namespaces/a", {})
    assert [s.path for s in api.seen] == ["/v1/namespaces/a"]  # nothing asked meanwhile
    cluster.members, cluster.leader = [*C[:3], C[3]], C[3]  # c4 joined and leads
    now[0] += 31
    cli.put("/v1/namespaces/a", {})
    assert [s.path for s in api.seen[1:]] == ["/v1/status", "/v1/namespaces/a"]
    assert writes(api)[-1].addr == C[3] and cli.addrs[0] == C[3]


def test_a_503_asks_for_the_members_and_retries_on_a_new_one_with_the_same_key() -> None:
    api = FakeApi(urls=C)
    cluster = Cluster(api)
    # c1 was removed (it still runs, says it is no member, and answers 503); c2 is a
    # member cut off from the leader (503 too), and lists c4, the leader, which joined
    # after the client was started.
    cluster.members, cluster.leader = [C[1], C[3]], C[3]
    cluster.removed, cluster.busy = {C[0]}, {C[1]}
    cli = client(api, [C[0], C[1]])
    cli.request("PUT", "/v1/jobs/default/web", body={}, idempotency_key="k-1")
    sent = writes(api)
    assert [s.addr for s in sent] == [C[0], C[3]]
    assert {s.headers["Idempotency-Key"] for s in sent} == {"k-1"}
    assert cli.addrs == [C[3], C[1]]


def test_a_removed_replicas_list_is_not_taken() -> None:
    api = FakeApi(urls=C)
    cluster = Cluster(api)
    cluster.members = [C[0], C[1]]
    cluster.removed = {C[0]}
    cli = client(api, [C[0]])
    cli.retry = RetryPolicy(attempts=2)
    with pytest.raises(ClientError):
        cli.put("/v1/namespaces/a", {})
    assert cli.addrs == [C[0]]  # nobody that is a member answered: nothing learned
