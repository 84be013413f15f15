"""Who is in the cluster: pysyncobj's dynamic membership, with each member's id and API URL.

pysyncobj (0.3.17, `dynamicMembershipChange=True`) changes membership one server at a time
through the log, as the Raft thesis (4.1) does: a `MEMBERSHIP` entry takes effect on a
replica as soon as it is appended there (the leader when it appends it, a follower when it
receives it), and is rolled back if that entry is truncated. The leader refuses
(REQUEST_DENIED) a change while the previous one is not yet applied, or before the no-op of
its term is applied. pysyncobj has no non-voting members: an added server counts towards the
majority at once (read-only nodes exist, but they have no address and can never become
voters without a restart under another identity).

pysyncobj's own `addNodeToCluster` pickles a `TCPNode` object into the entry, which our pickle
fence refuses; we write the entry ourselves, with primitives only:
``["add", raft_addr, raft_addr, {"id": ..., "api": ...}]``; pysyncobj reads the first three
items and ignores the rest, and the fourth tells every replica the member's id and API URL.

`MemberBook` keeps what this replica knows: the voters (the Raft configuration, as pysyncobj
has it) and the id and API URL of every server ever seen. It is written to `members.json` in
the data directory on every change, and into the Raft dump (see replica.py). On restart the
record, not the `--peer` flags, decides the peers (pysyncobj #133: once a dump exists, its
topology overrides configured peers anyway; the record makes that true before the first
compaction, and says so in the log).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hacontrol.raft import safety
from hacontrol.raft.storage import durable_replace

logger = logging.getLogger(__name__)

RECORD_NAME = "members.json"
RECORD_FORMAT = 1
MEMBERSHIP_TYPE = 2  # pysyncobj's _COMMAND_TYPE.MEMBERSHIP


@dataclass(frozen=True)
class MemberInfo:
    id: str
    raft: str
    api: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "raft": self.raft, "api": self.api}

    @staticmethod
    def from_dict(d: Any) -> MemberInfo | None:
        if not isinstance(d, dict):
            return None
        mid, raft, api = d.get("id"), d.get("raft"), d.get("api")
        if not (isinstance(mid, str) and isinstance(raft, str) and isinstance(api, str)
                and mid and raft):
            return None
        return MemberInfo(mid, raft, api)


def change_payload(kind: str, info: MemberInfo) -> bytes:
    """The body of a MEMBERSHIP entry (pysyncobj prefixes its type byte): `kind` is "add"
    or "rem"."""
    assert kind in ("add", "rem")
    return safety.safe_dumps([kind, info.raft, info.raft, {"id": info.id, "api": info.api}])


def read_record(data_dir: Path) -> tuple[list[MemberInfo], MemberInfo | None] | None:
    """(members, this replica) from the data directory's record; None when there is none."""
    path = data_dir / RECORD_NAME
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable membership record: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
        raise ValueError(f"{path}: unknown membership record format")
    members = [m for m in (MemberInfo.from_dict(x) for x in doc.get("members", [])) if m]
    return members, MemberInfo.from_dict(doc.get("self"))


class MemberBook:
    """This replica's view of the membership. Written on the tick thread, read anywhere."""

    def __init__(self, data_dir: Path | None, me: MemberInfo, peers: list[MemberInfo],
                 joining: bool = False) -> None:
        self.data_dir = data_dir
        self.me = me
        self._lock = threading.Lock()
        self._known: dict[str, MemberInfo] = {p.raft: p for p in peers}
        self._known[me.raft] = me
        # A joining replica is not a voter until the entry adding it reaches it.
        self._voters: set[str] = {p.raft for p in peers} | ({me.raft} if not joining else set())
        self.removed = False

    # ------------------------------------------------------------------ reading

    def members(self) -> list[MemberInfo]:
        """The voters, by id (this replica included once it is one)."""
        with self._lock:
            return sorted((self._info(a) for a in self._voters), key=lambda m: m.id)

    def is_member(self) -> bool:
        with self._lock:
            return self.me.raft in self._voters

    def by_raft(self, addr: str) -> MemberInfo | None:
        with self._lock:
            return self._known.get(addr)

    def _info(self, addr: str) -> MemberInfo:
        return self._known.get(addr) or MemberInfo(addr, addr, "")

    # ------------------------------------------------------------- tick thread

    def on_change(self, request: Any, reverse: bool) -> None:
        """A MEMBERSHIP entry was appended (or, `reverse`, truncated) here."""
        if not isinstance(request, list | tuple) or len(request) < 2:
            return
        kind, addr = request[0], request[1]
        if not isinstance(addr, str) or kind not in ("add", "rem"):
            return
        meta = request[3] if len(request) > 3 and isinstance(request[3], dict) else {}
        adding = (kind == "add") != reverse
        with self._lock:
            if not reverse and kind == "add":
                info = MemberInfo.from_dict({"raft": addr, **meta})
                if info is not None and addr != self.me.raft:
                    self._known[addr] = info
            before = set(self._voters)
            if adding:
                self._voters.add(addr)
            else:
                self._voters.discard(addr)
            if addr == self.me.raft:
                self.removed = not adding
            if self._voters == before:
                return  # applying an entry already taken into account when appended
        logger.info("membership: %s %s%s; voters now %s", "added" if adding else "removed",
                    addr, " (rolled back)" if reverse else "", sorted(self._voters))
        self.save()

    def reset(self, addrs: list[str], known: list[MemberInfo]) -> None:
        """The configuration a snapshot carries replaces ours (pysyncobj does the same)."""
        with self._lock:
            for info in known:
                if info.raft != self.me.raft:
                    self._known[info.raft] = info
            self._voters = set(addrs)
        self.save()

    def dump_fields(self) -> list[list[str]]:
        with self._lock:
            return [[m.raft, m.id, m.api] for m in self._known.values()]

    @staticmethod
    def from_dump_fields(rows: Any) -> list[MemberInfo]:
        out = []
        for row in rows if isinstance(rows, list) else []:
            if isinstance(row, list) and len(row) == 3 and all(isinstance(x, str) for x in row):
                out.append(MemberInfo(row[1], row[0], row[2]))
        return out

    def save(self) -> None:
        if self.data_dir is None:
            return
        with self._lock:
            doc = {"format": RECORD_FORMAT, "self": self.me.to_dict(),
                   "members": [self._info(a).to_dict() for a in sorted(self._voters)]}
        path = self.data_dir / RECORD_NAME
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump(doc, f, indent=1)
            durable_replace(tmp, path)
        except OSError:
            logger.exception("could not write the membership record %s", path)
            try:
                os.unlink(tmp)
            except OSError:
                pass


def peer_view(node: Any, now: float) -> dict[str, tuple[int, float | None, bool]]:
    """Tick thread, on the leader: raft address -> (match index, seconds since it last
    answered, connected). `now` is pysyncobj's clock."""
    match = node._SyncObj__raftMatchIndex
    seen = node._SyncObj__lastResponseTime
    connected = node._SyncObj__connectedNodes
    out = {}
    for peer in list(node._SyncObj__otherNodes):
        at = seen.get(peer)
        out[str(peer.address)] = (int(match.get(peer, 0)),
                                  None if at is None else max(now - at, 0.0),
                                  peer in connected)
    return out
