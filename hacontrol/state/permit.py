"""Who may apply a command: the access check every replica makes inside `apply`.

The API checks the same permissions when a request comes in (to answer 403 early and to
guard reads); this check is the one that counts for writes. It runs on every replica at the
command's place in the log, with the command's stamped time, so a token revoked (or
expired) before that place is refused everywhere, whatever a replica's API believed.
"""

from __future__ import annotations

from typing import Any

from hacontrol.acl.authorize import Action, Decision, authorize, node_may, usable
from hacontrol.model.acl import TokenType
from hacontrol.model.errors import Rejection

from . import commands as C
from .store import Store

ROOT_USERS = frozenset({"root", "0"})

# Ops only the controllers propose (the leader loop): no token may, but a management token
# (which may do everything) is not refused, as an operator's escape hatch.
CONTROLLER_OPS = frozenset({C.NODE_STATUS, C.PLAN, C.MIGRATE, C.DEPLOY_STEP,
                            C.ACL_TOKEN_PRUNE, C.CONTROLLER_CREDENTIAL, C.ALERT_TRANSITION,
                            C.ALERT_DELIVERY})


def names_root(who: Any) -> bool:
    """Whether a spec's `user` or `group` names root: "root", or any spelling of id 0
    ("0", "00", ...: the agent resolves every all-digit name as a number). A name that is
    an alias of uid 0 in some node's passwd is refused by that node's agent instead
    (`agent/assignments.py`), which alone can resolve it."""
    if not isinstance(who, str):
        return False
    return who in ROOT_USERS or (who.isdigit() and int(who) == 0)


def runs_as_root(spec: Any) -> bool:
    if not isinstance(spec, dict):
        return False
    return names_root(spec.get("user")) or names_root(spec.get("group"))


def _str(args: dict[str, Any], key: str) -> str | None:
    v = args.get(key)
    return v if isinstance(v, str) else None


def needed(store: Store, op: str, args: dict[str, Any]) -> list[tuple[Action, str | None]]:
    """The permissions a client token needs for a command (empty: none, e.g. a no-op)."""
    ns = _str(args, "namespace")
    match op:
        case C.NOOP | C.ACL_BOOTSTRAP:
            return []
        case C.NS_PUT:
            return [(Action.OPERATOR_WRITE, None)]
        case C.JOB_PUT:
            root = [(Action.RUN_AS_ROOT, ns)] if runs_as_root(args.get("spec")) else []
            return [(Action.SUBMIT_JOB, ns), *root]
        case C.JOB_SCALE:
            return [(Action.SCALE_JOB, ns)]
        case C.JOB_DELETE:
            return [(Action.SUBMIT_JOB, ns)]
        case C.JOB_REVERT:
            job = store.jobs.get((ns or "", _str(args, "name") or ""))
            target = next((v for v in job.history if v.version == args.get("version")),
                          None) if job is not None else None
            as_root = target is not None and (names_root(target.spec.user)
                                              or names_root(target.spec.group))
            return [(Action.SUBMIT_JOB, ns), *([(Action.RUN_AS_ROOT, ns)] if as_root else [])]
        case C.NODE_DRAIN:
            return [(Action.NODE_WRITE, None)]
        case C.ALERT_PUT | C.ALERT_DELETE | C.CLUSTER_CONFIG_PUT:
            # Alert sinks run commands and send requests from the leader's host: cluster-wide
            # operator rights, never a namespace's (said here, not left to the default).
            return [(Action.OPERATOR_WRITE, None)]
        case C.STATE_RESTORE:
            # It replaces every token and policy: whoever may restore may write the ACLs.
            return [(Action.OPERATOR_WRITE, None), (Action.ACL_WRITE, None)]
        case C.ACL_TOKEN_CREATE if args.get("type") == str(TokenType.INTRO):
            return [(Action.NODE_WRITE, None)]
        case (C.ACL_POLICY_PUT | C.ACL_POLICY_DELETE | C.ACL_TOKEN_CREATE
              | C.ACL_TOKEN_REVOKE):
            return [(Action.ACL_WRITE, None)]
    return [(Action.OPERATOR_WRITE, None)]


def _forbidden(decision: Decision) -> Rejection:
    return Rejection("forbidden", f"permission denied: {decision.reason}", "Authorization")


def check_command(store: Store, cmd: C.Command) -> Rejection | None:
    """None when the command may apply; the refusal otherwise. Commands without an
    accessor id come from the controllers and are not checked."""
    if cmd.acc is None:
        return None
    token = store.acl_tokens.get(cmd.acc)
    valid = usable(token, cmd.ts)
    if token is None or not valid:
        return _forbidden(valid)
    if cmd.op == C.ACL_BOOTSTRAP:
        return None
    if token.type == TokenType.INTRO:
        ok = cmd.op in (C.NODE_CREDENTIAL, C.NOOP)
        return None if ok else _forbidden(Decision(False, "an introduction token can only "
                                                          "be exchanged for a credential"))
    if cmd.op == C.NODE_CREDENTIAL:
        return _forbidden(Decision(False, "only an introduction token can be exchanged"))
    if cmd.op in (C.NODE_REGISTER, C.ALLOC_UPDATE):
        key = "name" if cmd.op == C.NODE_REGISTER else "node"
        decision = node_may(token, store.acl_policies, _str(cmd.args, key) or "")
        return None if decision else _forbidden(decision)
    if cmd.op in CONTROLLER_OPS and token.type != TokenType.MANAGEMENT:
        return _forbidden(Decision(False, f"{cmd.op} is proposed by the controllers only"))
    for action, ns in needed(store, cmd.op, cmd.args):
        decision = authorize(token, store.acl_policies, action, ns)
        if not decision:
            return _forbidden(decision)
    return None
