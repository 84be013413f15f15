"""The permission model on plain data: default deny, deny wins, globs, coarse rules."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hacontrol.acl.authorize import NAMESPACED, Action, authorize, node_may, usable
from hacontrol.model.acl import (
    Capability,
    Level,
    NamespaceRule,
    Policy,
    Token,
    TokenType,
    parse_policy,
    parse_token_request,
)
from hacontrol.model.errors import Rejection


def client(*policies: str) -> Token:
    return Token("00000000-0000-4000-8000-000000000001", "0" * 64, "t", TokenType.CLIENT,
                 tuple(policies))


def policy(name: str, namespaces: dict[str, dict[str, object]] | None = None,
           **coarse: str) -> Policy:
    return parse_policy(name, {"rules": {"namespaces": namespaces or {}, **coarse}})


def test_default_deny() -> None:
    tok = client("nothing")
    pols = [policy("nothing")]
    for action in Action:
        assert not authorize(tok, pols, action, "default")
    assert not authorize(client(), [], Action.LIST_JOBS, "default")


def test_read_policy_reads_but_does_not_write() -> None:
    tok, pols = client("ro"), [policy("ro", {"*": {"policy": "read"}})]
    assert authorize(tok, pols, Action.READ_JOB, "default")
    assert authorize(tok, pols, Action.LIST_JOBS, "x")
    assert authorize(tok, pols, Action.READ_LOGS, "x")
    for action in (Action.SUBMIT_JOB, Action.SCALE_JOB, Action.ALLOC_LIFECYCLE,
                   Action.RUN_AS_ROOT):
        assert not authorize(tok, pols, action, "default")


def test_write_does_not_imply_run_as_root() -> None:
    tok = client("w")
    pols = [policy("w", {"a": {"policy": "write"}})]
    assert authorize(tok, pols, Action.SUBMIT_JOB, "a")
    assert not authorize(tok, pols, Action.RUN_AS_ROOT, "a")
    pols = [policy("w", {"a": {"policy": "write", "capabilities": ["run-as-root"]}})]
    assert authorize(tok, pols, Action.RUN_AS_ROOT, "a")


def test_namespace_a_cannot_touch_b_and_globs_match() -> None:
    tok = client("a")
    pols = [policy("a", {"a": {"policy": "write"}, "team-*": {"capabilities": ["read-job"]}})]
    assert authorize(tok, pols, Action.SUBMIT_JOB, "a")
    assert not authorize(tok, pols, Action.SUBMIT_JOB, "b")
    assert not authorize(tok, pols, Action.READ_JOB, "b")
    assert authorize(tok, pols, Action.READ_JOB, "team-x")
    assert not authorize(tok, pols, Action.SUBMIT_JOB, "team-x")
    assert not authorize(tok, pols, Action.READ_JOB, "xteam-x")
    assert not authorize(tok, pols, Action.READ_JOB, None)  # namespaced needs a namespace


def test_deny_wins_across_rules_and_policies() -> None:
    tok = client("all", "no-secret")
    pols = [policy("all", {"*": {"policy": "write"}}, node="write"),
            policy("no-secret", {"secret": {"policy": "deny"}}, node="deny")]
    assert authorize(tok, pols, Action.SUBMIT_JOB, "default")
    assert not authorize(tok, pols, Action.READ_JOB, "secret")
    assert not authorize(tok, pols, Action.NODE_READ)
    cap_deny = [policy("all", {"*": {"policy": "write"}, "s*": {"capabilities": ["deny"]}})]
    assert not authorize(client("all"), cap_deny, Action.LIST_JOBS, "secret")


def test_coarse_rules() -> None:
    tok = client("p")
    pols = [policy("p", node="read", operator="write", acl="deny")]
    assert authorize(tok, pols, Action.NODE_READ)
    assert not authorize(tok, pols, Action.NODE_WRITE)
    assert authorize(tok, pols, Action.OPERATOR_READ)
    assert authorize(tok, pols, Action.OPERATOR_WRITE)
    assert not authorize(tok, pols, Action.ACL_READ)


def test_token_types() -> None:
    mgmt = Token("00000000-0000-4000-8000-000000000002", "1" * 64, "m", TokenType.MANAGEMENT)
    for action in Action:
        assert authorize(mgmt, [], action, "any")
    node = Token("00000000-0000-4000-8000-000000000003", "2" * 64, "n", TokenType.NODE,
                 node="n1")
    pols = [policy("all", {"*": {"policy": "write"}}, node="write")]
    for action in Action:
        assert not authorize(node, pols, action, "default")
    assert node_may(node, pols, "n1")
    assert not node_may(node, pols, "n2")
    assert node_may(mgmt, [], "n2")
    assert node_may(client("all"), pols, "n2")
    assert not node_may(client("none"), pols, "n2")


def test_expiry() -> None:
    tok = Token("00000000-0000-4000-8000-000000000004", "3" * 64, "e", TokenType.CLIENT,
                ("p",), create_ts=100.0, expires_ts=160.0)
    assert usable(tok, 159.9)
    assert not usable(tok, 160.0)
    assert not usable(None, 0.0)


@pytest.mark.parametrize(("body", "field"), [
    ({"rules": {"namespaces": {"a": {"policy": "admin"}}}}, "rules.namespaces.a.policy"),
    ({"rules": {"namespaces": {"a": {"capabilities": ["fly"]}}}},
     "rules.namespaces.a.capabilities[0]"),
    ({"rules": {"namespaces": {"A/B": {"policy": "read"}}}}, "rules.namespaces.A/B"),
    ({"rules": {"node": "all"}}, "rules.node"),
    ({"rules": {"nodes": "read"}}, "rules.nodes"),
    ({"rules": {}, "extra": 1}, "extra"),
    ({"name": "other"}, "name"),
])
def test_policy_parse_errors_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(Rejection) as err:
        parse_policy("p", body)
    assert err.value.code == "invalid" and err.value.field == field


def test_token_request_parse() -> None:
    req = parse_token_request({"name": "ci", "policies": ["a"], "ttl_s": 60})
    assert (req.type, req.policies, req.ttl_s) == (TokenType.CLIENT, ("a",), 60.0)
    for body, field in (({"type": "node"}, "type"), ({"policies": []}, "policies"),
                        ({"policies": ["a"], "ttl_s": -1}, "ttl_s"),
                        ({"policies": ["A"]}, "policies[0]")):
        with pytest.raises(Rejection) as err:
            parse_token_request(body)
        assert err.value.field == field


def test_policy_round_trips() -> None:
    p = policy("p", {"team-*": {"policy": "write", "capabilities": ["run-as-root"]}},
               node="read", operator="deny")
    assert Policy.from_dict(p.to_dict()) == p


# ------------------------------------------------------------------ properties

levels = st.sampled_from([None, *Level])
caps = st.frozensets(st.sampled_from(list(Capability)), max_size=3)
globs = st.sampled_from(["*", "a", "b", "a*", "*b", "team-*"])
rules = st.builds(NamespaceRule, levels, caps)
policies = st.builds(
    lambda name, ns, node, op, acl: Policy(name, "", ns, node, op, acl),
    st.sampled_from(["p1", "p2", "p3"]), st.dictionaries(globs, rules, max_size=3),
    levels, levels, levels)
namespaces = st.sampled_from(["a", "b", "ab", "team-x", "default"])
actions = st.sampled_from(list(Action))


@settings(max_examples=300, deadline=None)
@given(st.lists(policies, max_size=3, unique_by=lambda p: p.name), actions, namespaces,
       policies)
def test_adding_a_deny_never_grants(pols: list[Policy], action: Action, ns: str,
                                    extra: Policy) -> None:
    """Adding a policy can only add grants, unless it denies: then it can only remove."""
    tok = client(*[p.name for p in pols], "extra")
    extra = Policy("extra", "", extra.namespaces, extra.node, extra.operator, extra.acl)
    before = authorize(tok, pols, action, ns).allowed
    after = authorize(tok, [*pols, extra], action, ns).allowed
    denies = (any(r.policy == Level.DENY or Capability.DENY in r.capabilities
                  for r in extra.namespaces.values())
              or Level.DENY in (extra.node, extra.operator, extra.acl))
    if not denies:
        assert after or not before  # monotone: never takes a grant away
    if after and not before:
        # A grant appears only if the new policy grants it on its own.
        assert authorize(client("extra"), [extra], action, ns)


@settings(max_examples=300, deadline=None)
@given(st.lists(policies, max_size=3, unique_by=lambda p: p.name), actions, namespaces)
def test_a_matching_deny_always_refuses(pols: list[Policy], action: Action, ns: str) -> None:
    tok = client(*[p.name for p in pols], "deny-all")
    deny = Policy("deny-all", "", {"*": NamespaceRule(Level.DENY)}, Level.DENY, Level.DENY,
                  Level.DENY)
    assert not authorize(tok, [*pols, deny], action, ns)


@settings(max_examples=300, deadline=None)
@given(st.lists(policies, max_size=3, unique_by=lambda p: p.name), actions, namespaces)
def test_unnamed_policies_grant_nothing(pols: list[Policy], action: Action, ns: str) -> None:
    assert not authorize(client(), pols, action, ns)
    assert not authorize(client("missing"), pols, action, ns)


def test_namespaced_set_is_the_capabilities() -> None:
    assert {str(a) for a in NAMESPACED} == {str(c) for c in Capability} - {"deny"}
