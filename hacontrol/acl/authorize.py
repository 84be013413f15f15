"""One decision: may this token do this action (in this namespace)?

Default deny: an action is allowed only when some rule of the token's policies grants it,
and any matching `deny` (a namespace rule's `policy: deny` or capability `deny`, or a coarse
rule set to `deny`) refuses it whatever else grants it. Namespace rules match by glob (`*`
is any run of characters). A management token may do everything; node and introduction
tokens are not judged here (they speak only for their node, see `node_may`).
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from hacontrol.model.acl import Capability, Level, Policy, Token, TokenType


class Action(StrEnum):
    # Namespaced (need a namespace).
    LIST_JOBS = "list-jobs"
    READ_JOB = "read-job"
    SUBMIT_JOB = "submit-job"
    SCALE_JOB = "scale-job"
    READ_LOGS = "read-logs"
    ALLOC_LIFECYCLE = "alloc-lifecycle"
    RUN_AS_ROOT = "run-as-root"
    # Cluster-wide.
    NODE_READ = "node:read"
    NODE_WRITE = "node:write"
    OPERATOR_READ = "operator:read"
    OPERATOR_WRITE = "operator:write"
    ACL_READ = "acl:read"
    ACL_WRITE = "acl:write"


NAMESPACED = frozenset({Action.LIST_JOBS, Action.READ_JOB, Action.SUBMIT_JOB,
                        Action.SCALE_JOB, Action.READ_LOGS, Action.ALLOC_LIFECYCLE,
                        Action.RUN_AS_ROOT})

# What a namespace's coarse `policy` grants. `run-as-root` is never implied: it must be
# named, so that `write` on a namespace does not make a user root on every node.
READ_GRANTS = frozenset({Capability.LIST_JOBS, Capability.READ_JOB, Capability.READ_LOGS})
WRITE_GRANTS = READ_GRANTS | {Capability.SUBMIT_JOB, Capability.SCALE_JOB,
                              Capability.ALLOC_LIFECYCLE}


CAPABILITY_OF = {a: Capability(str(a)) for a in NAMESPACED}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def glob_match(glob: str, namespace: str) -> bool:
    if "*" not in glob:
        return glob == namespace
    if glob == "*":
        return True
    # fnmatchcase: no case folding, and `?`/`[...]` cannot occur (the parser allows only `*`).
    return fnmatch.fnmatchcase(namespace, glob)


@functools.lru_cache(maxsize=1024)
def _granted_in_rule(policy: Level | None, caps: frozenset[Capability]
                     ) -> frozenset[Capability]:
    # Cached: every request and every applied command asks this of the same few rules.
    granted = set(caps)
    if policy == Level.READ:
        granted |= READ_GRANTS
    elif policy == Level.WRITE:
        granted |= WRITE_GRANTS
    return frozenset(granted)


def _coarse(action: Action) -> tuple[str, Level]:
    area, _, level = str(action).partition(":")
    return area, Level(level)


def authorize(token: Token, policies: Mapping[str, Policy] | Iterable[Policy],
              action: Action, namespace: str | None = None) -> Decision:
    """Whether `token` may perform `action` (in `namespace` for namespaced actions).

    `policies` are the known policies (by name, or any iterable); those the token does not
    name are ignored, as are names the token lists that no longer exist. Expiry is not
    judged here: see `usable`.
    """
    if token.type == TokenType.MANAGEMENT:
        return Decision(True, "management token")
    if token.type != TokenType.CLIENT:
        return Decision(False, f"a {token.type} token may not {action}")
    by_name = policies if isinstance(policies, dict) else (
        dict(policies) if isinstance(policies, Mapping) else {p.name: p for p in policies})
    mine = [by_name[n] for n in token.policies if n in by_name]
    if action in NAMESPACED:
        if namespace is None:
            return Decision(False, f"{action} needs a namespace")
        cap = CAPABILITY_OF[action]
        granted = False
        for p in mine:
            for glob, rule in p.namespaces.items():
                if not glob_match(glob, namespace):
                    continue
                if rule.policy == Level.DENY or Capability.DENY in rule.capabilities:
                    return Decision(False, f"policy {p.name!r} denies namespace {namespace!r}")
                if cap in _granted_in_rule(rule.policy, rule.capabilities):
                    granted = True
        if granted:
            return Decision(True, "granted")
        return Decision(False, f"no policy grants {action} in namespace {namespace!r}")
    area, need = _coarse(action)
    granted = False
    for p in mine:
        level: Level | None = getattr(p, area)
        if level == Level.DENY:
            return Decision(False, f"policy {p.name!r} denies {area}")
        if level == Level.WRITE or (level == Level.READ and need == Level.READ):
            granted = True
    if granted:
        return Decision(True, "granted")
    return Decision(False, f"no policy grants {action}")


def usable(token: Token | None, now: float) -> Decision:
    """Whether a token (None: unknown or revoked) may be used at all at time `now`."""
    if token is None:
        return Decision(False, "unknown or revoked token")
    if token.expired(now):
        return Decision(False, "token expired")
    return Decision(True, "valid")


def node_may(token: Token, policies: Mapping[str, Policy] | Iterable[Policy],
             node: str) -> Decision:
    """Whether a token may speak for node `node` (its sync, registration and reports).

    A node credential speaks for its own node only; a management token, or a client token
    with `node: write`, may speak for any node (how agents joined before node credentials).
    """
    if token.type == TokenType.NODE:
        if token.node == node:
            return Decision(True, "own node")
        return Decision(False, f"a credential of node {token.node!r} cannot speak for {node!r}")
    return authorize(token, policies, Action.NODE_WRITE)
