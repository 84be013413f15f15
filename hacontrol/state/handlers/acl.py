"""acl_bootstrap, acl_policy_put/delete, acl_token_create/revoke, node_credential.

Secrets never reach the log: the proposer hashes them and these handlers store the hash.
Who may run each command is decided before the handler runs (`permit.py`).
"""

from __future__ import annotations

from typing import Any

from hacontrol.model.acl import (
    Policy,
    Token,
    TokenType,
    check_accessor,
    check_hash,
    parse_policy,
    parse_token_request,
)
from hacontrol.model.checks import check_name
from hacontrol.model.errors import Rejection, conflict, invalid, not_found

from ..context import Applying, Result


def _new_token(tx: Applying, args: dict[str, Any], type_: TokenType, name: str,
               policies: tuple[str, ...], ttl_s: float | None, node: str | None) -> Token:
    accessor = check_accessor(args.get("accessor_id"))
    secret_hash = check_hash(args.get("secret_hash"))
    if accessor in tx.store.acl_tokens or secret_hash in tx.store.acl_by_hash:
        raise conflict("a token with this accessor id or secret already exists", "accessor_id")
    return Token(accessor_id=accessor, secret_hash=secret_hash, name=name, type=type_,
                 policies=policies, create_ts=tx.ts,
                 expires_ts=None if ttl_s is None else tx.ts + ttl_s, node=node)


def bootstrap(tx: Applying, args: dict[str, Any]) -> Result:
    if tx.store.acl_bootstrapped:
        raise Rejection("forbidden", "the ACL system is already bootstrapped", "bootstrap")
    name = args.get("name") or "bootstrap"
    if not isinstance(name, str) or len(name) > 200:
        raise invalid("name", "must be a string of at most 200 characters")
    token = _new_token(tx, args, TokenType.MANAGEMENT, name, (), None, None)
    tx.store.acl_bootstrapped = True
    tx.store.add_token(token)
    tx.event("acl_bootstrapped", token=token.accessor_id)
    return {"token": token.public()}


def policy_put(tx: Applying, args: dict[str, Any]) -> Result:
    raw = args.get("policy")
    if not isinstance(raw, dict):
        raise invalid("policy", "must be an object")
    policy = parse_policy(raw.get("name"), {"description": raw.get("description"),
                                            "rules": raw.get("rules")})
    created = policy.name not in tx.store.acl_policies
    tx.store.acl_policies[policy.name] = policy
    tx.event("acl_policy_put", policy=policy.name, created=created)
    return {"policy": policy.to_dict()}


def policy_delete(tx: Applying, args: dict[str, Any]) -> Result:
    name = check_name(args.get("name"), "name")
    policy: Policy | None = tx.store.acl_policies.pop(name, None)
    if policy is None:
        raise not_found(f"policy {name!r}", "name")
    tx.event("acl_policy_deleted", policy=name)
    return {"policy": policy.to_dict()}


def token_create(tx: Applying, args: dict[str, Any]) -> Result:
    req = parse_token_request({k: args.get(k) for k in ("name", "type", "policies", "ttl_s")
                               if args.get(k) is not None},
                              types=(TokenType.MANAGEMENT, TokenType.CLIENT, TokenType.INTRO))
    for i, p in enumerate(req.policies):
        if p not in tx.store.acl_policies:
            raise invalid(f"policies[{i}]", f"no policy named {p!r}")
    node = None
    if req.type == TokenType.INTRO:
        if req.ttl_s is None:
            raise invalid("ttl_s", "an introduction token needs an expiry")
        if args.get("node") is not None:
            node = check_name(args.get("node"), "node")
    token = _new_token(tx, args, req.type, req.name, req.policies, req.ttl_s, node)
    tx.store.add_token(token)
    tx.event("acl_token_created", token=token.accessor_id, token_type=str(token.type))
    return {"token": token.public()}


def token_revoke(tx: Applying, args: dict[str, Any]) -> Result:
    accessor = check_accessor(args.get("accessor_id"))
    token = tx.store.remove_token(accessor)
    if token is None:
        raise not_found(f"token {accessor!r}", "accessor_id")
    tx.event("acl_token_revoked", token=accessor)
    return {"token": token.public()}


def node_credential(tx: Applying, args: dict[str, Any]) -> Result:
    """Exchange an introduction token (the command's actor, checked in `permit`) for a
    node credential bound to one node name; the introduction token is used up."""
    intro = tx.store.acl_tokens.get(tx.actor or "")
    if intro is None or intro.type != TokenType.INTRO:
        raise Rejection("forbidden", "only an introduction token can be exchanged", "token")
    node = check_name(args.get("node"), "node")
    if intro.node is not None and intro.node != node:
        raise Rejection("forbidden", f"this introduction token is for node {intro.node!r}",
                        "node")
    for t in tx.store.acl_tokens.values():
        if t.type == TokenType.NODE and t.node == node:
            raise conflict(f"node {node!r} already has a credential; revoke it first", "node")
    token = _new_token(tx, args, TokenType.NODE, f"node {node}", (), None, node)
    tx.store.remove_token(intro.accessor_id)
    tx.store.add_token(token)
    tx.event("node_credential_issued", node=node, token=token.accessor_id)
    return {"token": token.public()}
