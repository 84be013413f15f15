"""JSON Schemas (2020-12, as OpenAPI 3.1 uses them) for the bodies the API reads and serves.

Most are derived from the model's dataclasses by `dataclass_schema`: the job spec from
`hacontrol.model.spec` (a field added to a spec section appears in the document by itself,
with its type and default), the agent's sync messages from `hacontrol.model.messages`, the
allocation and node views from `hacontrol.model.records`. What a type cannot say (the
parser's bounds, an encoding that names a field differently) is declared once, in `WIRE_NAMES`
and `REFINE` below; `tests/unit/test_openapi.py` checks the derived spec schema against
what `parse_job_spec` accepts and `JobSpec.to_dict()` writes.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

from hacontrol.controller.status import ReplicaStatus
from hacontrol.model.checks import NAME_RE
from hacontrol.model.messages import SyncAnswer, SyncRequest
from hacontrol.model.records import Allocation, Deployment, JobVersion, Node
from hacontrol.model.resources import Quota, Resources, Usage
from hacontrol.model.spec import (
    HealthCheck,
    JobSpec,
    MetricSpec,
    PortSpec,
    ScalingSpec,
    SocketSpec,
)
from hacontrol.model.spec_parse import MAX_ARGV, MAX_COUNT, METRIC_NAME_RE
from hacontrol.model.states import JobStatus

from .errors import STATUS_BY_CODE

Schema = dict[str, Any]


def ecma(pattern: str) -> str:
    r"""A Python pattern as JSON Schema's (ECMA 262) dialect: `\Z` is `$` there."""
    return pattern.replace(r"\Z", "$")


NAME: Schema = {"type": "string", "pattern": ecma(NAME_RE.pattern), "maxLength": 64}
STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
OBJECT: Schema = {"type": "object"}

# Fields whose key in the JSON encoding is not the dataclass field's name.
WIRE_NAMES: dict[tuple[type, str], str] = {
    (ScalingSpec, "min_count"): "min",
    (ScalingSpec, "max_count"): "max",
}

# What the parser checks beyond the field's type. A refinement with a "type" replaces the
# derived schema (the encoding differs from the type); otherwise it adds to it.
REFINE: dict[tuple[type, str], Schema] = {
    (JobSpec, "command"): {"minItems": 1, "maxItems": MAX_ARGV},
    (JobSpec, "env"): {"type": "object", "additionalProperties": STRING, "default": {}},
    (JobSpec, "count"): {"minimum": 0, "maximum": MAX_COUNT},
    (JobSpec, "priority"): {"minimum": 0, "maximum": 100},
    (JobSpec, "cwd"): {"description": "an absolute path"},
    (JobSpec, "umask"): {"type": ["integer", "string", "null"],
                         "description": "an integer, or octal digits as a string (\"022\")"},
    (JobSpec, "depends_on"): {"type": ["array", "null"], "items": NAME, "maxItems": 32},
    (JobSpec, "sockets"): {"maxItems": 16},
    (JobSpec, "constraints"): {"maxItems": 32},
    (Resources, "cpu"): {"exclusiveMinimum": 0, "maximum": 1024},
    (Resources, "memory_mb"): {"minimum": 1, "maximum": 2**30},
    (HealthCheck, "port"): {"type": ["integer", "string", "null"], "minimum": 1,
                            "maximum": 65535,
                            "description": "a port number, or the name of one of `ports`"},
    (PortSpec, "static"): {"minimum": 1, "maximum": 65535},
    (JobSpec, "ports"): {"maxItems": 16},
    (JobSpec, "services"): {"maxItems": 16},
    (SocketSpec, "port"): {"minimum": 1, "maximum": 65535},
    (MetricSpec, "port"): {"minimum": 1, "maximum": 65535},
    (MetricSpec, "name"): {"pattern": "^" + ecma(METRIC_NAME_RE.pattern) + "$"},
}


def type_schema(tp: Any, closed: bool = False) -> Schema:
    """The schema of one annotated type (dataclasses and TypedDicts included); `closed`:
    dataclasses within refuse other keys."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return {"type": "null"}
    if tp is Any:
        return {}
    if origin in (typing.Union, types.UnionType):
        parts = [type_schema(a, closed) for a in args]
        if all(set(p) <= {"type", "enum"} and "enum" not in p for p in parts):
            kinds: list[str] = []
            for p in parts:
                kinds += p["type"] if isinstance(p["type"], list) else [p["type"]]
            return {"type": kinds}
        return {"anyOf": parts}
    if isinstance(tp, type) and issubclass(tp, enum.StrEnum):
        return {"type": "string", "enum": [m.value for m in tp]}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return dataclass_schema(tp, closed=closed)
    if typing.is_typeddict(tp):
        hints = typing.get_type_hints(tp)
        return {"type": "object", "required": [k for k in hints if k in tp.__required_keys__],
                "properties": {k: type_schema(v) for k, v in hints.items()}}
    if origin in (tuple, list) and (origin is list or (len(args) == 2 and args[1] is ...)):
        return {"type": "array", "items": type_schema(args[0], closed)}
    if origin is tuple:
        return {"type": "array", "prefixItems": [type_schema(a) for a in args],
                "minItems": len(args), "maxItems": len(args)}
    if origin is dict:
        return {"type": "object", "additionalProperties": type_schema(args[1])}
    raise TypeError(f"no JSON schema for {tp!r}")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return dataclasses.MISSING
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def dataclass_schema(cls: type, *, closed: bool = False, required: str = "declared",
                     omit: tuple[str, ...] = (), extra: Schema | None = None) -> Schema:
    """The schema of a dataclass in its JSON encoding.

    `closed`: other keys are refused, here and in the dataclasses within (the spec parser
    answers 422 to an unknown field).
    `required`: "declared" (fields without a default), "all" (a view that always writes
    every key) or "none". `extra`: more properties (a view adds to the record).
    """
    hints = typing.get_type_hints(cls)
    props: Schema = {}
    must: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in omit:
            continue
        key = WIRE_NAMES.get((cls, f.name), f.name)
        schema = type_schema(hints[f.name], closed)
        refine = REFINE.get((cls, f.name), {})
        schema = dict(refine) if "type" in refine else {**schema, **refine}
        default = _default(f)
        if default is not dataclasses.MISSING and default is not None and \
                "default" not in schema:
            schema["default"] = default
        props[key] = schema
        if required == "all" or (required == "declared" and default is dataclasses.MISSING):
            must.append(key)
    props.update(extra or {})
    out: Schema = {"type": "object", "properties": props}
    if must:
        out["required"] = must
    if closed:
        out["additionalProperties"] = False
    return out


def spec_schema() -> Schema:
    """A job spec as `PUT /v1/jobs/{ns}/{name}` reads it (and `hacontrol job run` sends it)."""
    schema = dataclass_schema(JobSpec, closed=True)
    # Job files may carry their own name and namespace; the URL decides both.
    schema["properties"].update(name=NAME, namespace=NAME)
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


ERROR: Schema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "field"],
        "properties": {
            "code": {"type": "string", "enum": sorted(STATUS_BY_CODE)},
            "message": STRING,
            "field": {"type": ["string", "null"], "description": "the field at fault"},
            "outcome": {"type": "string", "enum": ["unknown", "not_applied"],
                        "description": "503 only: whether the write may still apply "
                                       "(retry with the same Idempotency-Key)"},
            "leader": {"type": ["string", "null"]},
            "leader_api": {"type": ["string", "null"]},
            "idempotency_key": {"type": ["string", "null"]},
        }}},
}

STATUS: Schema = type_schema(ReplicaStatus)

READY: Schema = {
    "type": "object", "required": ["ready", "id", "role", "leader", "term", "applied_index",
                                   "commit_index"],
    "properties": {"ready": {"type": "boolean"}, "id": STRING, "role": STRING,
                   "leader": {"type": ["string", "null"]}, "term": INTEGER,
                   "applied_index": INTEGER, "commit_index": INTEGER},
}

QUOTA_BODY: Schema = {
    "type": "object", "additionalProperties": False,
    "properties": {"quota": dataclass_schema(Quota, closed=True, required="none")},
}

NAMESPACE: Schema = {
    "type": "object", "required": ["name", "quota", "usage", "headroom"],
    "properties": {"name": NAME, "quota": dataclass_schema(Quota, required="all"),
                   "usage": dataclass_schema(Usage, required="all"),
                   "headroom": {"type": ["object", "null"]}},
}

ALLOCATION: Schema = dataclass_schema(Allocation, required="all", omit=("ports",), extra={
    "ports": {"type": "object", "additionalProperties": {"type": "integer"},
              "description": "its named ports (only when its job has some)"},
    "metrics": {"type": ["object", "null"],
                "description": "latest sampled metrics (leader's memory; null elsewhere)"},
    "pending_reason": {"type": "string", "description": "why it is not placed yet"},
})

NODE: Schema = dataclass_schema(Node, required="all", omit=("modify_index",), extra={
    "eligible": {"type": "boolean"},
    "free": {"type": "object", "properties": {"cpu": NUMBER, "memory_mb": INTEGER}},
    "allocations": {"type": "integer", "description": "allocations holding resources here"},
    "last_heartbeat": {"type": ["number", "null"],
                       "description": "leader's memory only; null on followers"},
    "agent": {"type": ["object", "null"], "description": "what the agent says of itself"},
    "measured": {"type": ["object", "null"], "description":
                 "what the node's allocations use as their agents last reported it (cores, "
                 "MB, how many reported); the leader's memory only: null on followers",
                 "properties": {"cpu": NUMBER, "memory_mb": INTEGER,
                                "reporting": INTEGER}},
})


def _job_view() -> Schema:
    props = dict(dataclass_schema(JobSpec)["properties"])
    props.update(
        namespace=NAME, name=NAME, version=INTEGER,
        status={"type": "string", "enum": [*JobStatus]},
        created_at=NUMBER, updated_at=NUMBER, modify_index=INTEGER,
        deployment=_nullable(dataclass_schema(Deployment)),
        counts={"type": "object", "additionalProperties": INTEGER,
                "description": "desired, allocations per state, and queued: pending ones "
                               "that wait for a node (reads only)"},
        allocations={"type": "array", "items": ALLOCATION,
                     "description": "only in GET /v1/jobs/{ns}/{name}"})
    return {"type": "object", "properties": props,
            "required": ["namespace", "name", "command", "count", "version", "status",
                         "counts"]}


JOB: Schema = _job_view()

VERSION: Schema = dataclass_schema(JobVersion)

SYNC_REQUEST: Schema = dataclass_schema(SyncRequest, required="none")
SYNC_REQUEST["required"] = ["node"]
SYNC_ANSWER: Schema = dataclass_schema(SyncAnswer, required="all")

EVENT: Schema = {
    "type": "object", "required": ["id", "index", "seq", "type"],
    "properties": {"id": {"type": "string", "description": "INDEX.SEQ"}, "index": INTEGER,
                   "seq": INTEGER, "type": STRING},
}


_ANY: Schema = {}
_NULLABLE_STR: Schema = {"type": ["string", "null"]}
PLAN: Schema = {
    "type": "object",
    "required": ["job_modify_index", "diff", "changes", "placements", "quota"],
    "properties": {
        "job_modify_index": INTEGER,
        "diff": {"type": "array", "items": {
            "type": "object", "required": ["field", "old", "new"],
            "properties": {"field": {"type": "string"},
                           "type": {"enum": ["added", "deleted", "edited"]},
                           "old": _ANY, "new": _ANY}}},
        "changes": {"type": "object",
                    "required": ["create", "replace", "stop", "ignore", "pending"],
                    "properties": {k: INTEGER for k in
                                   ("create", "replace", "stop", "ignore", "pending")}},
        "placements": {"type": "array", "items": {
            "type": "object", "required": ["action", "allocation", "node", "reason"],
            "properties": {
                "action": {"enum": ["create", "replace", "stop", "ignore", "pending"]},
                "allocation": _NULLABLE_STR, "node": _NULLABLE_STR,
                "reason": {"type": "string"}}}},
        "quota": {"type": "object", "required": ["ok", "reason"],
                  "properties": {"ok": {"type": "boolean"}, "reason": _NULLABLE_STR}},
        "version": INTEGER, "changed": {"type": "boolean"}, "index": INTEGER,
    },
}


def written(key: str, schema: Schema) -> Schema:
    """The answer to a write: the changed object and the log index it was applied at."""
    return {"type": "object", "required": [key, "index"],
            "properties": {key: schema, "index": INTEGER, "changed": {"type": "boolean"}}}


def listing(key: str, schema: Schema) -> Schema:
    return {"type": "object", "required": [key],
            "properties": {key: {"type": "array", "items": schema}}}


# An allocation's recent CPU and memory (GET /v1/allocations/{id}/metrics).
METRIC_POINT: Schema = {"type": "object", "required": ["t", "cpu_percent", "rss_bytes"],
                "properties": {"t": {"type": "number", "description": "epoch seconds"},
                               "cpu_percent": {"type": ["number", "null"]},
                               "rss_bytes": {"type": ["integer", "null"]}}}
METRIC_HISTORY: Schema = {"type": "object", "required": ["allocation", "kept", "now", "window_s",
                                                 "points"], "properties": {
    "allocation": {"type": "string"},
    "kept": {"type": "boolean", "description": "whether this replica keeps the history "
                                               "(only the leader does)"},
    "leader_api": {"type": ["string", "null"]},
    "via": {"type": "string", "description": "the replica that asked the leader for this "
                                             "answer on the caller's behalf"},
    "now": {"type": "number"}, "window_s": {"type": "number"},
    "points": {"type": "array", "items": METRIC_POINT}}}
