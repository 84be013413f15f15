"""acl_bootstrap, acl_policy_put/delete, acl_token_create/revoke/prune, node_credential,
controller_credential.

Secrets never reach the log: the proposer hashes them and these handlers store the hash.
Who may run each command is decided before the handler runs (`permit.py`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import replace
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

HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


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
    if token.intro is not None:
        # A revoked node credential cannot be had again from the introduction token that
        # issued it, even within that token's lifetime.
        tx.store.remove_token(token.intro)
    tx.event("acl_token_revoked", token=accessor)
    return {"token": token.public()}


# Expired tokens removed by one prune command at most: a command's apply stays short
# however many expired at once; the leader proposes the next one for the rest.
PRUNE_MAX = 256


def token_prune(tx: Applying, args: dict[str, Any]) -> Result:
    """Remove tokens expired at the command's stamped time (never by the replica's clock,
    so every replica removes the same ones), at most `limit` (default and cap PRUNE_MAX),
    in the table's order. Expired tokens are refused anyway; this only frees the state."""
    limit = args.get("limit", PRUNE_MAX)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= PRUNE_MAX:
        raise invalid("limit", f"must be an integer in [1, {PRUNE_MAX}]")
    gone = expired_tokens(tx.store.acl_tokens.values(), tx.ts, limit)
    for accessor in gone:
        tx.store.remove_token(accessor)
    if gone:
        tx.event("acl_tokens_pruned", count=len(gone))
    return {"pruned": gone}


def expired_tokens(tokens: Iterable[Token], now: float, limit: int) -> list[str]:
    """The accessor ids of the first `limit` tokens expired at `now`."""
    return list(itertools.islice((t.accessor_id for t in tokens if t.expired(now)), limit))


def node_credential(tx: Applying, args: dict[str, Any]) -> Result:
    """Exchange an introduction token (the command's actor, checked in `permit`) for a
    node credential bound to one node name.

    Safe to retry: the introduction token stays until the credential is first used (the
    node's registration removes it), it expires, or the credential is revoked. Until then
    the same introduction token for the same node answers a new credential and removes the
    one it issued before (whose answer may have been lost), so one credential at most is
    valid; another node name is refused, the first exchange binds the token to its name."""
    intro = tx.store.acl_tokens.get(tx.actor or "")
    if intro is None or intro.type != TokenType.INTRO:
        raise Rejection("forbidden", "only an introduction token can be exchanged", "token")
    node = check_name(args.get("node"), "node")
    if intro.node is not None and intro.node != node:
        raise Rejection("forbidden", f"this introduction token is for node {intro.node!r}",
                        "node")
    earlier = next((t for t in tx.store.acl_tokens.values()
                    if t.type == TokenType.NODE and t.node == node), None)
    if earlier is not None and earlier.intro != intro.accessor_id:
        raise conflict(f"node {node!r} already has a credential; revoke it first", "node")
    token = replace(_new_token(tx, args, TokenType.NODE, f"node {node}", (), None, node),
                    intro=intro.accessor_id)
    if earlier is not None:
        tx.store.remove_token(earlier.accessor_id)
    if intro.node is None:
        tx.store.add_token(replace(intro, node=node))
    tx.store.add_token(token)
    tx.event("node_credential_issued", node=node, token=token.accessor_id,
             **({"replaces": earlier.accessor_id} if earlier is not None else {}))
    return {"token": token.public()}


def intro_used(tx: Applying) -> None:
    """The acting node credential is in use: the introduction token that issued it can no
    longer be exchanged (called by the node's registration)."""
    token = tx.store.acl_tokens.get(tx.actor or "")
    if token is None or token.intro is None:
        return
    tx.store.remove_token(token.intro)
    tx.store.add_token(replace(token, intro=None))


def controller_credential(tx: Applying, args: dict[str, Any]) -> Result:
    """Keep the credential the controllers present to agents, once: every replica proposes
    the one it derives from its cluster secret, the first applied stays. Kept in the state
    so that it survives a change of the cluster secret (agents pin its hash) and reaches
    replicas that join later."""
    value = args.get("credential")
    if not isinstance(value, str) or not HEX64.match(value):
        raise invalid("credential", "must be 64 hex digits")
    if tx.store.controller_credential is not None:
        return {"set": False}
    tx.store.controller_credential = value
    tx.event("controller_credential_set")
    return {"set": True}
