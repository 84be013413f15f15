"""The command envelope: the only thing ever written to the Raft log.

A command is a msgpack map `{"op": str, "ts": float, "idem": str | None, "args": map}`,
plus `"acc": str` when it is proposed on behalf of a token (its accessor id). The proposer
stamps `ts` (wall clock), the idempotency key and the accessor id, so that applying a
command never reads the clock or a random source and every replica computes the same state
and makes the same access decision. A command without `acc` comes from the controllers
themselves (the leader loop, a configured bootstrap), as every command did before ACLs.
Since protocol 2 the envelope also carries `"v"`, the proposer's protocol version
(`model/protocol.py`); a command without it is version 1, and readers ignore keys they do not
know, so replicas of two adjacent versions share one log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from hacontrol.model import protocol
from hacontrol.model.errors import invalid

NOOP = "noop"
NS_PUT = "ns_put"
JOB_PUT = "job_put"
JOB_SCALE = "job_scale"
JOB_DELETE = "job_delete"
NODE_REGISTER = "node_register"
NODE_STATUS = "node_status"
PLAN = "plan"
ALLOC_UPDATE = "alloc_update"
NODE_DRAIN = "node_drain"
MIGRATE = "migrate"  # stop allocations and place replacements (drain)
DEPLOY_STEP = "deploy_step"  # one step of a rolling update
JOB_REVERT = "job_revert"
ACL_BOOTSTRAP = "acl_bootstrap"
ACL_POLICY_PUT = "acl_policy_put"
ACL_POLICY_DELETE = "acl_policy_delete"
ACL_TOKEN_CREATE = "acl_token_create"
ACL_TOKEN_REVOKE = "acl_token_revoke"
NODE_CREDENTIAL = "node_credential"  # an introduction token exchanged for a node credential
ACL_TOKEN_PRUNE = "acl_token_prune"  # the leader removes tokens expired at the stamped time
# The controllers' credential towards agents, set once (`acl.secrets.controller_credential`).
CONTROLLER_CREDENTIAL = "controller_credential"
STATE_RESTORE = "state_restore"  # replace the whole state with a snapshot's (one entry)
CLUSTER_CONFIG_PUT = "cluster_config_put"  # the cluster's settings (health score weights)
ALERT_PUT = "alert_put"
ALERT_DELETE = "alert_delete"
ALERT_TRANSITION = "alert_transition"  # the leader: alerts firing or resolved, notifications
ALERT_DELIVERY = "alert_delivery"  # the leader: the outcome of delivery attempts
# Several commands in one log entry (`args["commands"]`: each one's own encoding), applied
# one after the other, each with its own result, idempotency key and access check: what
# concurrent writers proposed at once costs one entry instead of one each.
GROUP = "group"

OPS = frozenset({NOOP, NS_PUT, JOB_PUT, JOB_SCALE, JOB_DELETE, NODE_REGISTER, NODE_STATUS,
                 PLAN, ALLOC_UPDATE, NODE_DRAIN, MIGRATE, DEPLOY_STEP, JOB_REVERT,
                 ACL_BOOTSTRAP, ACL_POLICY_PUT, ACL_POLICY_DELETE, ACL_TOKEN_CREATE,
                 ACL_TOKEN_REVOKE, NODE_CREDENTIAL, ACL_TOKEN_PRUNE, CONTROLLER_CREDENTIAL,
                 STATE_RESTORE, CLUSTER_CONFIG_PUT, ALERT_PUT, ALERT_DELETE, ALERT_TRANSITION,
                 ALERT_DELIVERY, GROUP})
# What every replica of protocol 1 knows: a replica that reports no capabilities (a version
# before the report existed, or one not heard from yet) is assumed to know these and no more.
# Never add to it: a new command type goes into OPS only, and is proposed once every voter
# reports it (controller/versions.py).
PROTOCOL1_OPS = frozenset({NOOP, NS_PUT, JOB_PUT, JOB_SCALE, JOB_DELETE, NODE_REGISTER,
                           NODE_STATUS, PLAN, ALLOC_UPDATE, NODE_DRAIN, MIGRATE, DEPLOY_STEP,
                           JOB_REVERT, ACL_BOOTSTRAP, ACL_POLICY_PUT, ACL_POLICY_DELETE,
                           ACL_TOKEN_CREATE, ACL_TOKEN_REVOKE, NODE_CREDENTIAL})

# Job spec sections newer than protocol 2's first release. A replica that does not know one
# refuses a spec holding it as an unknown field while the others accept it, and their
# states would part: so each is reported like a command type, and a spec using it is
# proposed only once every voter reports it (controller/versions.py).
SPEC_PORTS = "job_spec.ports"
SPEC_SERVICES = "job_spec.services"
SPEC_SCALING_METRIC = "job_spec.scaling.metric"
SPEC_HEALTH_PORT = "job_spec.health.port"
SPEC_FEATURES = frozenset({SPEC_PORTS, SPEC_SERVICES, SPEC_SCALING_METRIC, SPEC_HEALTH_PORT})
# What a replica reports it understands: command types and spec sections.
CAPABILITIES = OPS | SPEC_FEATURES


def spec_features(op: str, args: dict[str, Any]) -> list[str]:
    """The spec sections of `SPEC_FEATURES` a command's job spec uses (its encoded form
    leaves a section out when it is not used)."""
    spec = args.get("spec") if op == JOB_PUT else None
    if not isinstance(spec, dict):
        return []
    scaling, health = spec.get("scaling"), spec.get("health")
    used = {SPEC_PORTS: bool(spec.get("ports")),
            SPEC_SERVICES: bool(spec.get("services")),
            SPEC_SCALING_METRIC: isinstance(scaling, dict) and scaling.get("metric") is not None,
            SPEC_HEALTH_PORT: isinstance(health, dict) and health.get("port") is not None}
    return sorted(name for name, on in used.items() if on)


MAX_COMMAND_BYTES = 4 * 1024 * 1024
MAX_IDEM_LEN = 200
# A group holds at most this many commands (a group's apply is one entry's: see
# raft/long_apply.py for what a long one costs).
MAX_GROUP = 256


@dataclass(frozen=True)
class Command:
    op: str
    ts: float
    args: dict[str, Any]
    idem: str | None = None
    acc: str | None = None  # the accessor id of the token it acts for; None: the controllers
    v: int = protocol.OLDEST  # the protocol version of the replica that proposed it

    def encode(self) -> bytes:
        envelope: dict[str, Any] = {"op": self.op, "ts": self.ts, "idem": self.idem,
                                    "args": self.args}
        if self.acc is not None:
            envelope["acc"] = self.acc
        if self.v > protocol.OLDEST:
            envelope["v"] = self.v
        raw: bytes = msgpack.packb(envelope, use_bin_type=True)
        return raw


def decode(raw: bytes) -> Command:
    """Parse and check the envelope; raises `Rejection` on anything malformed."""
    if not isinstance(raw, bytes | bytearray) or len(raw) > MAX_COMMAND_BYTES:
        raise invalid("command", "not a command frame")
    try:
        d = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=MAX_COMMAND_BYTES,
                            max_str_len=MAX_COMMAND_BYTES)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise invalid("command", f"undecodable command: {type(exc).__name__}") from None
    if not isinstance(d, dict):
        raise invalid("command", "command must be a map")
    op, ts, idem, args = d.get("op"), d.get("ts"), d.get("idem"), d.get("args")
    v = protocol.read_version(d.get("v"))
    if not isinstance(op, str) or op not in OPS:
        newer = f" (proposed by protocol {v}, this replica speaks {protocol.PROTOCOL})" \
            if v > protocol.PROTOCOL else ""
        raise invalid("op", f"unknown operation {op!r}{newer}")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise invalid("ts", "missing timestamp")
    if idem is not None and (not isinstance(idem, str) or not 0 < len(idem) <= MAX_IDEM_LEN):
        raise invalid("Idempotency-Key", f"must be 1-{MAX_IDEM_LEN} characters")
    if not isinstance(args, dict):
        raise invalid("args", "must be a map")
    acc = d.get("acc")
    if acc is not None and (not isinstance(acc, str) or not 0 < len(acc) <= MAX_IDEM_LEN):
        raise invalid("acc", "must be an accessor id")
    return Command(op=op, ts=float(ts), args=args, idem=idem, acc=acc, v=v)


def encode_group(ts: float, commands: list[bytes], v: int) -> bytes:
    """One `GROUP` entry holding `commands` (each already encoded, in the order to apply)."""
    return Command(GROUP, ts, {"commands": commands}, v=v).encode()


def group_members(args: dict[str, Any]) -> list[bytes]:
    """The encoded commands of a `GROUP` entry; raises `Rejection` when it is malformed
    (the whole entry is then refused, on every replica alike)."""
    members = args.get("commands")
    if not isinstance(members, list) or not 0 < len(members) <= MAX_GROUP \
            or not all(isinstance(m, bytes) for m in members):
        raise invalid("commands", f"a group holds 1-{MAX_GROUP} encoded commands")
    return members
