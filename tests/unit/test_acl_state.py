"""Access decisions made inside apply: every replica refuses the same commands."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.acl.secrets import hash_secret, new_accessor, new_secret
from hacontrol.agent.process import resolve_identity
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

SPEC = {"command": ["sleep", "100"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 10}}
NODE = {"cpu": 4.0, "memory_mb": 4096, "address": "http://127.0.0.1:1", "labels": {},
        "attributes": {}}


class Feeder:
    """Applies commands with increasing log indexes and times, as the log would."""

    def __init__(self) -> None:
        self.m = StateMachine()
        self.index = 0
        self.ts = 1000.0

    def __call__(self, op: str, acc: str | None = None, idem: str | None = None,
                 ts: float | None = None, **args: Any) -> dict[str, Any]:
        self.index += 1
        self.ts = ts if ts is not None else self.ts + 1
        return self.m.apply(C.Command(op, self.ts, args, idem, acc).encode(), self.index)

    def token(self, op: str, acc: str | None, **args: Any) -> str:
        """Create a token; returns its accessor id."""
        accessor = new_accessor()
        r = self(op, acc, accessor_id=accessor, secret_hash=hash_secret(new_secret()), **args)
        assert r["ok"], r
        return accessor


def setup() -> tuple[Feeder, str]:
    f = Feeder()
    root = f.token(C.ACL_BOOTSTRAP, None, name="bootstrap")
    return f, root


def policy(f: Feeder, acc: str, name: str, rules: dict[str, Any]) -> None:
    r = f(C.ACL_POLICY_PUT, acc, policy={"name": name, "rules": rules})
    assert r["ok"], r


def refused(r: dict[str, Any]) -> bool:
    return not r["ok"] and r["error"]["code"] == "forbidden"


def test_bootstrap_works_once() -> None:
    f, root = setup()
    assert f.m.acl_bootstrapped and f.m.acl_tokens[root].type == "management"
    r = f(C.ACL_BOOTSTRAP, None, accessor_id=new_accessor(), secret_hash=hash_secret("x"))
    assert refused(r)
    assert len(f.m.acl_tokens) == 1


def test_read_only_token_cannot_write() -> None:
    f, root = setup()
    policy(f, root, "ro", {"namespaces": {"*": {"policy": "read"}}, "node": "read"})
    ro = f.token(C.ACL_TOKEN_CREATE, root, name="ro", type="client", policies=["ro"])
    assert refused(f(C.JOB_PUT, ro, namespace="default", name="web", spec=SPEC))
    assert f(C.JOB_PUT, root, namespace="default", name="web", spec=SPEC)["ok"]
    for op, args in ((C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 3}),
                     (C.JOB_DELETE, {"namespace": "default", "name": "web"}),
                     (C.NS_PUT, {"name": "x", "quota": {}}),
                     (C.NODE_DRAIN, {"name": "n1", "enable": True, "deadline_s": 1}),
                     (C.ACL_POLICY_DELETE, {"name": "ro"}),
                     (C.PLAN, {"placements": []}),
                     (C.NODE_REGISTER, {"name": "n1", **NODE})):
        assert refused(f(op, ro, **args)), op
    assert f.m.jobs[("default", "web")].spec.count == 1


def test_namespace_a_token_cannot_touch_b() -> None:
    f, root = setup()
    assert f(C.NS_PUT, root, name="a", quota={})["ok"]
    assert f(C.NS_PUT, root, name="b", quota={})["ok"]
    policy(f, root, "a", {"namespaces": {"a": {"policy": "write"}}})
    tok = f.token(C.ACL_TOKEN_CREATE, root, name="a", type="client", policies=["a"])
    assert f(C.JOB_PUT, tok, namespace="a", name="web", spec=SPEC)["ok"]
    assert refused(f(C.JOB_PUT, tok, namespace="b", name="web", spec=SPEC))
    assert f(C.JOB_PUT, root, namespace="b", name="web", spec=SPEC)["ok"]
    assert refused(f(C.JOB_SCALE, tok, namespace="b", name="web", count=2))
    assert refused(f(C.JOB_DELETE, tok, namespace="b", name="web"))
    assert f(C.JOB_SCALE, tok, namespace="a", name="web", count=2)["ok"]


def test_revoked_and_expired_tokens_are_refused() -> None:
    f, root = setup()
    policy(f, root, "w", {"namespaces": {"*": {"policy": "write"}}})
    tok = f.token(C.ACL_TOKEN_CREATE, root, name="w", type="client", policies=["w"])
    assert f(C.JOB_PUT, tok, namespace="default", name="a", spec=SPEC)["ok"]
    assert f(C.ACL_TOKEN_REVOKE, root, accessor_id=tok)["ok"]
    assert refused(f(C.JOB_PUT, tok, namespace="default", name="b", spec=SPEC))
    short = f.token(C.ACL_TOKEN_CREATE, root, name="s", type="client", policies=["w"],
                    ttl_s=60)
    made = f.m.acl_tokens[short].create_ts
    assert f(C.JOB_PUT, short, ts=made + 59, namespace="default", name="c", spec=SPEC)["ok"]
    assert refused(f(C.JOB_PUT, short, ts=made + 60, namespace="default", name="d",
                     spec=SPEC))


def test_refusal_is_not_recorded_under_the_idempotency_key() -> None:
    f, root = setup()
    policy(f, root, "ro", {"namespaces": {"*": {"policy": "read"}}})
    ro = f.token(C.ACL_TOKEN_CREATE, root, name="ro", type="client", policies=["ro"])
    assert refused(f(C.JOB_PUT, ro, "k1", namespace="default", name="web", spec=SPEC))
    assert f(C.JOB_PUT, root, "k1", namespace="default", name="web", spec=SPEC)["ok"]
    # And a replay of someone else's result is refused before it is answered.
    assert refused(f(C.JOB_PUT, ro, "k1", namespace="default", name="web", spec=SPEC))


def test_run_as_root_needs_the_capability() -> None:
    f, root = setup()
    policy(f, root, "w", {"namespaces": {"*": {"policy": "write"}}})
    policy(f, root, "root", {"namespaces": {"ops": {"capabilities": ["run-as-root"]}}})
    w = f.token(C.ACL_TOKEN_CREATE, root, name="w", type="client", policies=["w"])
    both = f.token(C.ACL_TOKEN_CREATE, root, name="r", type="client", policies=["w", "root"])
    assert f(C.NS_PUT, root, name="ops", quota={})["ok"]
    as_root = {**SPEC, "user": "root"}
    assert refused(f(C.JOB_PUT, w, namespace="default", name="x", spec=as_root))
    assert refused(f(C.JOB_PUT, both, namespace="default", name="x", spec=as_root))
    assert f(C.JOB_PUT, both, namespace="ops", name="x", spec=as_root)["ok"]
    assert f(C.JOB_PUT, w, namespace="default", name="y", spec=SPEC)["ok"]
    # Reverting to a version that ran as root needs it too.
    assert f(C.JOB_PUT, root, namespace="default", name="z", spec=as_root)["ok"]
    assert f(C.JOB_PUT, root, namespace="default", name="z", spec=SPEC)["ok"]
    assert refused(f(C.JOB_REVERT, w, namespace="default", name="z", version=1))


@pytest.mark.parametrize("user", ["0", "00", "000"])
def test_every_spelling_of_uid_0_needs_run_as_root(user: str) -> None:
    f, root = setup()
    policy(f, root, "w", {"namespaces": {"*": {"policy": "write"}}})
    w = f.token(C.ACL_TOKEN_CREATE, root, name="w", type="client", policies=["w"])
    assert resolve_identity(user, None, 0).uid == 0  # what the agent would run it as
    assert refused(f(C.JOB_PUT, w, namespace="default", name="x", spec={**SPEC, "user": user}))
    assert refused(f(C.JOB_PUT, w, namespace="default", name="y",
                     spec={**SPEC, "group": user}))
    assert f(C.JOB_PUT, w, namespace="default", name="z", spec={**SPEC, "user": "65534"})["ok"]


def test_node_credential_speaks_for_its_node_only() -> None:
    f, root = setup()
    intro = f.token(C.ACL_TOKEN_CREATE, root, name="i", type="intro", ttl_s=600, node="n1")
    cred = f.token(C.NODE_CREDENTIAL, intro, node="n1")
    assert f(C.NODE_REGISTER, cred, name="n1", **NODE)["ok"]
    assert intro not in f.m.acl_tokens  # used up by the credential's first use
    assert refused(f(C.NODE_CREDENTIAL, intro, accessor_id=new_accessor(),
                     secret_hash=hash_secret("again"), node="n1"))
    assert refused(f(C.NODE_REGISTER, cred, name="n2", **NODE))
    assert refused(f(C.ALLOC_UPDATE, cred, node="n2", updates=[]))
    assert f(C.ALLOC_UPDATE, cred, node="n1", updates=[])["ok"]
    for op, args in ((C.JOB_PUT, {"namespace": "default", "name": "w", "spec": SPEC}),
                     (C.JOB_SCALE, {"namespace": "default", "name": "w", "count": 2}),
                     (C.NODE_DRAIN, {"name": "n1", "enable": True, "deadline_s": 1}),
                     (C.ACL_TOKEN_CREATE, {"type": "management"})):
        assert refused(f(op, cred, **args)), op
    # An intro token for n2 cannot claim n1; another claim of n1 is refused.
    other = f.token(C.ACL_TOKEN_CREATE, root, name="i2", type="intro", ttl_s=600, node="n2")
    assert refused(f(C.NODE_CREDENTIAL, other, accessor_id=new_accessor(),
                     secret_hash=hash_secret("y"), node="n1"))
    anyname = f.token(C.ACL_TOKEN_CREATE, root, name="i3", type="intro", ttl_s=600)
    r = f(C.NODE_CREDENTIAL, anyname, accessor_id=new_accessor(),
          secret_hash=hash_secret("z"), node="n1")
    assert r["error"]["code"] == "conflict"
    # An intro token does nothing else, and an expired one is refused.
    assert refused(f(C.JOB_PUT, anyname, namespace="default", name="w", spec=SPEC))
    late = f.token(C.ACL_TOKEN_CREATE, root, name="i4", type="intro", ttl_s=10)
    assert refused(f(C.NODE_CREDENTIAL, late, ts=f.ts + 11, accessor_id=new_accessor(),
                     secret_hash=hash_secret("w"), node="n9"))


def test_an_exchange_can_be_retried_until_the_credential_is_used() -> None:
    """A lost answer does not strand the node: the same introduction token for the same
    node answers a new credential and removes the earlier one; another name is refused;
    the credential's first use (its registration) ends the retries."""
    f, root = setup()
    intro = f.token(C.ACL_TOKEN_CREATE, root, name="i", type="intro", ttl_s=600)
    first = f.token(C.NODE_CREDENTIAL, intro, node="n1")
    assert f.m.acl_tokens[intro].node == "n1"  # bound by the first exchange
    assert refused(f(C.NODE_CREDENTIAL, intro, accessor_id=new_accessor(),
                     secret_hash=hash_secret("x"), node="n2"))
    second = f.token(C.NODE_CREDENTIAL, intro, node="n1")
    assert first not in f.m.acl_tokens and second in f.m.acl_tokens
    assert refused(f(C.NODE_REGISTER, first, name="n1", **NODE))
    assert f(C.NODE_REGISTER, second, name="n1", **NODE)["ok"]
    assert intro not in f.m.acl_tokens and f.m.acl_tokens[second].intro is None
    assert refused(f(C.NODE_CREDENTIAL, intro, accessor_id=new_accessor(),
                     secret_hash=hash_secret("y"), node="n1"))
    # Revoking an unused credential also ends its introduction token's retries.
    other = f.token(C.ACL_TOKEN_CREATE, root, name="j", type="intro", ttl_s=600, node="n3")
    cred = f.token(C.NODE_CREDENTIAL, other, node="n3")
    assert f(C.ACL_TOKEN_REVOKE, root, accessor_id=cred)["ok"]
    assert other not in f.m.acl_tokens


def test_prune_removes_only_what_expired_at_its_stamped_time_bounded() -> None:
    f, root = setup()
    short = [f.token(C.ACL_TOKEN_CREATE, root, name=f"s{i}", type="management", ttl_s=10)
             for i in range(5)]
    lasting = f.token(C.ACL_TOKEN_CREATE, root, name="l", type="management", ttl_s=1000)
    ts = f.ts
    r = f(C.ACL_TOKEN_PRUNE, None, ts=ts + 1, limit=3)  # s0 expires at ts + 5
    assert r["ok"] and r["pruned"] == [] and set(short) <= set(f.m.acl_tokens)
    r = f(C.ACL_TOKEN_PRUNE, None, ts=ts + 20, limit=3)
    assert r["pruned"] == short[:3]
    r = f(C.ACL_TOKEN_PRUNE, None, ts=ts + 21)
    assert r["pruned"] == short[3:]
    assert lasting in f.m.acl_tokens and root in f.m.acl_tokens
    assert not set(short) & set(f.m.acl_tokens)
    assert not f(C.ACL_TOKEN_PRUNE, None, limit=10_000)["ok"]
    # Proposed by the controllers only: a client token is refused.
    policy(f, root, "p", {"acl": "write", "operator": "write"})
    client = f.token(C.ACL_TOKEN_CREATE, root, name="c", type="client", policies=["p"])
    assert refused(f(C.ACL_TOKEN_PRUNE, client))
    assert refused(f(C.CONTROLLER_CREDENTIAL, client, credential="a" * 64))


def test_the_controllers_credential_is_kept_once_and_survives_a_snapshot() -> None:
    f, _ = setup()
    before = f.m.digest()
    assert f(C.CONTROLLER_CREDENTIAL, None, credential="a" * 64)["set"]
    assert not f(C.CONTROLLER_CREDENTIAL, None, credential="b" * 64)["set"]
    assert f.m.controller_credential == "a" * 64 and f.m.digest() != before
    assert not f(C.CONTROLLER_CREDENTIAL, None, credential="not hex")["ok"]
    copy = StateMachine()
    copy.restore(f.m.snapshot())
    assert copy.controller_credential == "a" * 64 and copy.digest() == f.m.digest()
    assert "a" * 64 not in str(list(f.m.events))


def test_writes_name_their_token_in_events() -> None:
    f, root = setup()
    assert f(C.JOB_PUT, root, namespace="default", name="web", spec=SPEC)["ok"]
    evs = [e for e in f.m.events if e["type"] == "job_registered"]
    assert evs and evs[-1]["accessor"] == root
    assert f(C.JOB_PUT, None, namespace="default", name="sys", spec=SPEC)["ok"]
    assert "accessor" not in f.m.events[-1]


def test_secrets_never_enter_the_state() -> None:
    f, root = setup()
    secret = new_secret()
    accessor = new_accessor()
    assert f(C.ACL_TOKEN_CREATE, root, accessor_id=accessor, secret_hash=hash_secret(secret),
             name="x", type="management")["ok"]
    snap = f.m.snapshot()
    assert secret.encode() not in snap and hash_secret(secret).encode() in snap


def test_snapshot_round_trip_and_unchanged_without_acls() -> None:
    plain = StateMachine()
    assert not {"acl_tokens", "acl_policies", "acl_bootstrapped"} & set(
        msgpack.unpackb(plain.snapshot()))
    f, root = setup()
    policy(f, root, "p", {"namespaces": {"a*": {"policy": "read"}}, "node": "write"})
    tok = f.token(C.ACL_TOKEN_CREATE, root, name="t", type="client", policies=["p"], ttl_s=5)
    copy = StateMachine()
    copy.restore(f.m.snapshot())
    assert copy.digest() == f.m.digest()
    assert copy.acl_tokens == f.m.acl_tokens and copy.acl_policies == f.m.acl_policies
    token = f.m.acl_tokens[tok]
    assert copy.store.token_by_hash(token.secret_hash) == token
    assert copy.acl_bootstrapped


def test_garbled_arguments_with_a_token_are_refusals_not_crashes() -> None:
    f, root = setup()
    for op in sorted(C.OPS):
        for args in ({}, {"spec": {"user": ["root"]}, "namespace": 3, "name": None},
                     {"type": "intro", "node": ["x"], "ttl_s": "1"}, {"policy": {"rules": 1}},
                     {"accessor_id": 7, "version": {}, "updates": "x"}):
            r = f(op, root, **args)
            assert f.m.broken is None, (op, args, r)


values = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats()
                      | st.sampled_from(["root", "0", "n1", "default", "intro", "client",
                                         "management", "x*"]),
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(
                          ["name", "namespace", "spec", "user", "type", "node", "policies",
                           "ttl_s", "accessor_id", "secret_hash", "policy", "rules",
                           "version", "count", "updates"]), inner, max_size=4),
                      max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(C.OPS)), st.dictionaries(st.sampled_from(
    ["name", "namespace", "spec", "type", "node", "policies", "ttl_s", "policy", "version",
     "count", "updates", "quota", "enable"]), values, max_size=5), st.integers(0, 3))
def test_random_commands_with_tokens_never_break_the_replica(op: str, args: dict[str, Any],
                                                             who: int) -> None:
    f, root = setup()
    policy(f, root, "p", {"namespaces": {"*": {"policy": "write"}}, "node": "write"})
    client = f.token(C.ACL_TOKEN_CREATE, root, name="c", type="client", policies=["p"])
    actor = [None, root, client, new_accessor()][who]
    before = msgpack.unpackb(f.m.snapshot())
    r = f(op, actor, **args)
    assert f.m.broken is None
    if not r["ok"]:
        # Refused as a whole: nothing changed but the applied index (and the idempotency
        # table, which these commands, sent without a key, do not touch).
        after = msgpack.unpackb(f.m.snapshot())
        before.pop("index"), after.pop("index")
        assert after == before
