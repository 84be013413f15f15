"""Who this replica is, who its peers are, and its status as `GET /v1/status` serves it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NotRequired, TypedDict


@dataclass(frozen=True)
class Member:
    id: str
    raft: str
    api: str


def parse_peer(text: str) -> Member:
    """`ID=RAFTHOST:PORT=http://APIHOST:PORT`"""
    parts = text.split("=", 2)
    if len(parts) != 3 or not all(parts):
        raise SystemExit(f"--peer {text!r}: expected ID=RAFTHOST:PORT=http://APIHOST:PORT")
    return Member(*parts)


class MemberView(TypedDict):
    id: str
    raft: str
    api: str


class ReplicaStatus(TypedDict):
    id: str
    role: str  # leader | follower | candidate
    leader: str | None
    leader_api: str | None
    term: int
    commit_index: int
    applied_index: int
    healthy: bool
    durable: bool  # False only with a test-only switch (--unsafe-no-fsync, storage plants)
    storage_error: str | None  # damaged files or a failed fsync: this replica serves nothing
    pid: int
    members: list[MemberView]
    member: bool  # False while joining, and once removed
    # Since protocol 2 (absent from a replica of protocol 1):
    protocol: NotRequired[int]  # the version this replica speaks
    ops: NotRequired[list[str]]  # the command types it knows
    member_protocols: NotRequired[dict[str, int | None]]  # each voter's, as seen here
    ops_waiting: NotRequired[list[str]]  # known here, not yet to every voter: refused
