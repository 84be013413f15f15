"""The protocol version every message between replicas, agents and controllers carries.

Version 1 is everything written before messages carried a version: a message without one
is version 1. Version 2 adds the field itself (`"v"` in a Raft command, `"protocol"` in an
agent's sync request and its answer and in `GET /v1/status`, the `Hacontrol-Protocol`
header on the controllers' calls to agents) and the capability report (`ops` in
`GET /v1/status`) that gates new command types (`controller/versions.py`).

Every change is additive: readers ignore fields they do not know, and treat a missing
version as 1, so replicas and agents of versions N and N+1 work together during a rolling
upgrade. A new command type is proposed only once every voter reports it knows it.
"""

from __future__ import annotations

import os
from typing import Any

PROTOCOL = 2
OLDEST = 1
HEADER = "Hacontrol-Protocol"
# Testing switches (read at start-up): make this process speak an older protocol, or report
# that it does not know some command types, as a replica of the previous release would.
# Only ever makes the cluster more careful: nothing is unlocked by them.
PRETEND_PROTOCOL_ENV = "HACONTROL_PRETEND_PROTOCOL"
PRETEND_WITHOUT_OPS_ENV = "HACONTROL_PRETEND_WITHOUT_OPS"


def spoken() -> int:
    """The version this process speaks: `PROTOCOL`, unless told to pretend to be older."""
    raw = os.environ.get(PRETEND_PROTOCOL_ENV, "")
    try:
        pretend = int(raw) if raw else PROTOCOL
    except ValueError:
        return PROTOCOL
    return min(max(pretend, OLDEST), PROTOCOL)


def versioned() -> bool:
    """Whether this process writes version fields at all (version 1 never did)."""
    return spoken() > OLDEST


def pretend_missing_ops() -> frozenset[str]:
    raw = os.environ.get(PRETEND_WITHOUT_OPS_ENV, "")
    return frozenset(op.strip() for op in raw.split(",") if op.strip())


def read_version(raw: object) -> int:
    """A peer's version as it wrote it: missing or nonsense means the oldest (1), so a
    reader never refuses a message over its version field."""
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < OLDEST:
        return OLDEST
    return min(raw, 2**31)


def stamped(message: dict[str, Any]) -> dict[str, Any]:
    """`message` with this process's version as `"protocol"` (left out by version 1)."""
    if versioned():
        message["protocol"] = spoken()
    return message
