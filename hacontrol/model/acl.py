"""Access control records: policies and tokens, and their parsers.

A policy grants, per namespace glob, a coarse `policy` (deny, read, write) and fine
`capabilities` (named as Nomad names them), plus coarse `node`, `operator` and `acl` rules.
A token names policies; its secret is never stored, only the secret's SHA-256. The parsers
raise `Rejection` naming the field, the same checks for API input and for log entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .checks import check_name, no_unknown, obj
from .errors import invalid


class Level(StrEnum):
    DENY = "deny"
    READ = "read"
    WRITE = "write"


class Capability(StrEnum):
    LIST_JOBS = "list-jobs"
    READ_JOB = "read-job"
    SUBMIT_JOB = "submit-job"
    SCALE_JOB = "scale-job"
    READ_LOGS = "read-logs"
    ALLOC_LIFECYCLE = "alloc-lifecycle"
    RUN_AS_ROOT = "run-as-root"
    DENY = "deny"  # in a capability list: nothing in these namespaces


class TokenType(StrEnum):
    MANAGEMENT = "management"  # every permission, no policies needed
    CLIENT = "client"          # what its policies grant
    NODE = "node"              # speaks for one node only (its sync and reports)
    INTRO = "intro"            # exchanged once for a node credential


MAX_POLICIES = 64
MAX_RULES = 256
MAX_DESCRIPTION = 500
MAX_TTL_S = 10 * 365 * 86400.0
# A namespace glob: the name characters plus `*` (any run of them).
GLOB_RE = re.compile(r"^[a-z0-9_.*-]{1,64}\Z")
ACCESSOR_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")


@dataclass(frozen=True)
class NamespaceRule:
    policy: Level | None = None
    capabilities: frozenset[Capability] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"capabilities": sorted(self.capabilities)}
        if self.policy is not None:
            d["policy"] = str(self.policy)
        return d


@dataclass(frozen=True)
class Policy:
    name: str
    description: str = ""
    namespaces: dict[str, NamespaceRule] = field(default_factory=dict)
    node: Level | None = None
    operator: Level | None = None
    acl: Level | None = None

    def rules_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"namespaces": {g: r.to_dict()
                                            for g, r in sorted(self.namespaces.items())}}
        for key in ("node", "operator", "acl"):
            level = getattr(self, key)
            if level is not None:
                d[key] = str(level)
        return d

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "rules": self.rules_dict()}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Policy:
        return parse_policy(d["name"], {"description": d.get("description", ""),
                                        "rules": d.get("rules")})


@dataclass(frozen=True)
class Token:
    """A token as the state keeps it: never its secret, only the secret's SHA-256."""

    accessor_id: str
    secret_hash: str
    name: str
    type: TokenType
    policies: tuple[str, ...] = ()
    create_ts: float = 0.0
    expires_ts: float | None = None
    # For node credentials: the node they speak for; for intro tokens: the name they allow
    # (None: any name not yet bound).
    node: str | None = None
    # For node credentials: the accessor id of the introduction token exchanged for it, while
    # that token may still be exchanged again (a retry whose first answer was lost).
    intro: str | None = None

    def expired(self, now: float) -> bool:
        return self.expires_ts is not None and now >= self.expires_ts

    def to_dict(self) -> dict[str, Any]:
        d = {"accessor_id": self.accessor_id, "secret_hash": self.secret_hash,
             "name": self.name, "type": str(self.type), "policies": list(self.policies),
             "create_ts": self.create_ts, "expires_ts": self.expires_ts, "node": self.node}
        # Only when set: tokens without it encode (and digest) as before it existed.
        if self.intro is not None:
            d["intro"] = self.intro
        return d

    def public(self) -> dict[str, Any]:
        """What the API shows: everything but the hash."""
        d = self.to_dict()
        del d["secret_hash"]
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Token:
        return Token(accessor_id=d["accessor_id"], secret_hash=d["secret_hash"],
                     name=d["name"], type=TokenType(d["type"]),
                     policies=tuple(d.get("policies") or ()),
                     create_ts=float(d.get("create_ts") or 0.0),
                     expires_ts=None if d.get("expires_ts") is None else float(d["expires_ts"]),
                     node=d.get("node"), intro=d.get("intro"))


# ------------------------------------------------------------------ parsers

def _level(value: Any, field_: str) -> Level | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in Level.__members__.values():
        raise invalid(field_, "must be one of deny, read, write")
    return Level(value)


def _text(value: Any, field_: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise invalid(field_, f"must be a string of at most {limit} characters")
    if any(ord(c) < 32 and c not in "\t" for c in value):
        raise invalid(field_, "must not contain control characters")
    return value


def parse_namespace_rule(raw: Any, field_: str) -> NamespaceRule:
    d = obj(raw, field_)
    no_unknown(d, {"policy", "capabilities"}, f"{field_}.")
    caps_raw = d.get("capabilities") or []
    if not isinstance(caps_raw, list):
        raise invalid(f"{field_}.capabilities", "must be a list")
    known = set(Capability.__members__.values())
    caps: set[Capability] = set()
    for i, c in enumerate(caps_raw):
        if not isinstance(c, str) or c not in known:
            raise invalid(f"{field_}.capabilities[{i}]",
                          "unknown capability; one of " + ", ".join(sorted(known)))
        caps.add(Capability(c))
    return NamespaceRule(_level(d.get("policy"), f"{field_}.policy"), frozenset(caps))


def parse_policy(name: Any, body: Any) -> Policy:
    """A policy from `{"description", "rules": {"namespaces", "node", "operator", "acl"}}`."""
    name = check_name(name, "name")
    d = obj(body, "body")
    no_unknown(d, {"name", "description", "rules"}, "")
    if d.get("name") not in (None, name):
        raise invalid("name", "differs from the name in the path")
    rules = obj(d.get("rules"), "rules")
    no_unknown(rules, {"namespaces", "node", "operator", "acl"}, "rules.")
    ns_raw = obj(rules.get("namespaces"), "rules.namespaces")
    if len(ns_raw) > MAX_RULES:
        raise invalid("rules.namespaces", f"at most {MAX_RULES} rules")
    namespaces: dict[str, NamespaceRule] = {}
    for glob, rule in ns_raw.items():
        if not GLOB_RE.match(glob):
            raise invalid(f"rules.namespaces.{glob}",
                          "must be a namespace name or a glob of one with '*'")
        namespaces[glob] = parse_namespace_rule(rule, f"rules.namespaces.{glob}")
    return Policy(name=name, description=_text(d.get("description"), "description",
                                                 MAX_DESCRIPTION),
                  namespaces=namespaces,
                  node=_level(rules.get("node"), "rules.node"),
                  operator=_level(rules.get("operator"), "rules.operator"),
                  acl=_level(rules.get("acl"), "rules.acl"))


@dataclass(frozen=True)
class TokenRequest:
    """What a caller asks for in `POST /v1/acl/tokens`."""

    name: str
    type: TokenType
    policies: tuple[str, ...]
    ttl_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": str(self.type), "policies": list(self.policies),
                "ttl_s": self.ttl_s}


def parse_ttl(value: Any, field_: str = "ttl_s") -> float | None:
    if value is None:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not 0 < value <= MAX_TTL_S):
        raise invalid(field_, f"must be a number of seconds in (0, {MAX_TTL_S:g}]")
    return float(value)


def parse_token_request(body: Any, types: tuple[TokenType, ...] = (TokenType.MANAGEMENT,
                                                                   TokenType.CLIENT)
                        ) -> TokenRequest:
    d = obj(body, "body")
    no_unknown(d, {"name", "type", "policies", "ttl_s"}, "")
    name = _text(d.get("name"), "name", 200)
    type_raw = d.get("type", "client")
    if not isinstance(type_raw, str) or type_raw not in [str(t) for t in types]:
        raise invalid("type", "must be one of " + ", ".join(str(t) for t in types))
    pols = d.get("policies") or []
    if not isinstance(pols, list) or len(pols) > MAX_POLICIES:
        raise invalid("policies", f"must be a list of at most {MAX_POLICIES} policy names")
    policies = tuple(check_name(p, f"policies[{i}]") for i, p in enumerate(pols))
    if type_raw == TokenType.CLIENT and not policies:
        raise invalid("policies", "a client token needs at least one policy")
    return TokenRequest(name, TokenType(type_raw), policies, parse_ttl(d.get("ttl_s")))


def check_accessor(value: Any, field_: str = "accessor_id") -> str:
    if not isinstance(value, str) or not ACCESSOR_RE.match(value):
        raise invalid(field_, "must be an accessor id (a UUID)")
    return value


def check_hash(value: Any, field_: str = "secret_hash") -> str:
    if not isinstance(value, str) or not HASH_RE.match(value):
        raise invalid(field_, "must be a SHA-256 hex digest")
    return value
