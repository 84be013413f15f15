"""Adding and removing controller replicas: one change at a time, always on the leader.

The rules live here as pure functions (`peer_rows`, `removal_refusal`); `Membership` does
the I/O through the replica's log (`raft/membership.py` says what pysyncobj does with a
membership entry). Every change runs on the leader: elsewhere `NotLeader` names it, and the
API redirects there.

- An add takes effect in the log at once (pysyncobj has no non-voting members), so the
  request returns only once the new replica has caught up (snapshot plus log), its match
  index within `CAUGHT_UP_LAG` of the commit index and answering every heartbeat for
  `STEADY_S`; until then no other change starts.
- Before an add, the leader connects to the new member's Raft port and refuses
  (`unreachable`) when it cannot; a new member that never connects while the leader waits
  for its catch-up (never answers it) is removed again (`never_connected`).
- A second change while one is in progress is refused at once (`change_in_progress`, a
  409), as is one that pysyncobj's leader refuses (REQUEST_DENIED): nothing waits.
- Removing the leader hands leadership to the most caught-up follower first; the new leader
  then carries out the removal (the API redirects the request to it).
- A removal that would leave fewer than a majority of the remaining voters alive is refused
  (`quorum_at_risk`) unless forced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

from hacontrol.raft.bridge import NotApplied as LogNotApplied
from hacontrol.raft.bridge import OutcomeUnknown as LogOutcomeUnknown
from hacontrol.raft.membership import MemberInfo, change_payload

from .errors import MembershipConflict, NotApplied, NotLeader, OutcomeUnknown, Rejection

if TYPE_CHECKING:
    from .replica import Controller

__all__ = ["Autopilot", "MemberInfo", "Membership", "PeerRow", "dead_to_remove", "peer_rows",
           "removal_refusal"]

log = logging.getLogger(__name__)

# A follower that answered the leader within this long counts as alive.
ALIVE_S = 2.0
# A joining replica counts as caught up once its match index is this close to the commit
# index (under load the commit index moves on while it catches up).
CAUGHT_UP_LAG = 100
JOIN_CATCH_UP_S = 120.0
# ... and stays so, answering every heartbeat, this long (Nomad's server stabilization
# time): right after loading a large snapshot a replica was seen to go silent for seconds,
# and a change started then (a removal) found no majority.
STEADY_S = 1.0
STEADY_CONTACT_S = 0.3
CHANGE_TIMEOUT_S = 10.0
# Connecting to a joiner's Raft port: a round trip on any network that can run Raft.
PROBE_S = 3.0
# A new leader refuses changes until the no-op of its term is applied: retry that long.
DENIED_RETRY_S = 2.0
TRANSFER_S = 5.0


@dataclass(frozen=True)
class Autopilot:
    """Nomad's `cleanup_dead_servers`: the leader removes a member that has not answered
    for `dead_after_s`, never below `min_quorum` members, and never when the removal itself
    would leave no live majority. Off unless enabled."""

    enabled: bool = False
    min_quorum: int = 3
    dead_after_s: float = 30.0


def dead_to_remove(rows: list[PeerRow], pilot: Autopilot) -> PeerRow | None:
    """The member autopilot removes now, if any (one at a time, the longest silent first)."""
    if not pilot.enabled or len(rows) - 1 < pilot.min_quorum:
        return None
    dead = [r for r in rows if not r["leader"] and not r["alive"]
            and (r["last_contact_s"] is None or r["last_contact_s"] >= pilot.dead_after_s)]
    alive = {r["raft"] for r in rows if r["alive"]}
    voters = [r["raft"] for r in rows]
    dead.sort(key=lambda r: -(r["last_contact_s"] or float("inf")))
    for row in dead:
        if removal_refusal(voters, alive, row["raft"]) is None:
            return row
    return None


class PeerRow(TypedDict):
    id: str
    raft: str
    api: str
    voter: bool
    leader: bool
    alive: bool
    last_contact_s: float | None  # None: never answered this leader
    index_lag: int | None  # commit index minus its match index


def peer_rows(members: list[MemberInfo], me: str,
              view: dict[str, tuple[int, float | None, bool]], commit: int) -> list[PeerRow]:
    """The leader's table of its members (`me`: its own Raft address; `view`: its followers
    as `Replica.peer_view` gives them)."""
    rows: list[PeerRow] = []
    for m in members:
        if m.raft == me:
            rows.append(PeerRow(id=m.id, raft=m.raft, api=m.api, voter=True, leader=True,
                                alive=True, last_contact_s=0.0, index_lag=0))
            continue
        match, seen, connected = view.get(m.raft, (0, None, False))
        rows.append(PeerRow(
            id=m.id, raft=m.raft, api=m.api, voter=True, leader=False,
            alive=connected and seen is not None and seen <= ALIVE_S,
            last_contact_s=None if seen is None else round(seen, 3),
            index_lag=max(commit - match, 0)))
    return rows


def removal_refusal(voters: list[str], alive: set[str], target: str
                    ) -> MembershipConflict | None:
    """Why removing `target` would endanger the cluster, or None."""
    if target not in voters:
        return None
    remaining = [v for v in voters if v != target]
    if not remaining:
        return MembershipConflict("last_member", "cannot remove the only member")
    up = [v for v in remaining if v in alive]
    need = len(remaining) // 2 + 1
    if len(up) < need:
        return MembershipConflict(
            "quorum_at_risk",
            f"quorum at risk: removing it would leave {len(up)} of the {len(remaining)} "
            f"remaining members alive, fewer than the {need} a majority needs; use force "
            "to remove it anyway",
            {"alive": len(up), "remaining": len(remaining), "needed": need})
    return None


class Membership:
    """Membership changes of the cluster, through this replica while it leads."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self._lock = asyncio.Lock()

    # -------------------------------------------------------------------- reading

    def peers(self) -> list[PeerRow]:
        self._require_leader()
        replica = self.ctl.replica
        return peer_rows(replica.book.members(), replica.config.raft_addr,
                         replica.peer_view(), replica.status().commit_index)

    def _require_leader(self) -> None:
        if self.ctl.leading_term() is None:
            st = self.ctl.status()
            raise NotLeader(st["leader"], st["leader_api"])

    def _alive(self) -> set[str]:
        return {row["raft"] for row in self.peers() if row["alive"]}

    # -------------------------------------------------------------------- changes

    async def add(self, info: MemberInfo) -> dict[str, Any]:
        """Add `info` and return once it has caught up. Idempotent: for a member with the
        same id and address it only waits for that (without holding up other changes: a
        joiner whose answer was lost asks again)."""
        self._require_leader()
        started = time.monotonic()
        if self._already(info):
            lag = await self._catch_up(info.raft, 1)
            return {"member": info.to_dict(), "index": None, "index_lag": lag,
                    "catch_up_s": round(time.monotonic() - started, 3)}
        async with self._exclusive():
            self._require_leader()
            index = None
            if not self._already(info):
                await self._reachable(info.raft)
                index = await self._change("add", info)
            try:
                lag = await self._catch_up(info.raft, index or 1)
            except MembershipConflict as exc:
                if exc.code == "never_connected" and index is not None:
                    await self._change("rem", info)
                    exc.reason += "; removed again"
                raise
            return {"member": info.to_dict(), "index": index, "index_lag": lag,
                    "catch_up_s": round(time.monotonic() - started, 3)}

    def _already(self, info: MemberInfo) -> bool:
        """Whether `info` is a member; MembershipConflict when its id or address is taken."""
        for m in self.ctl.replica.book.members():
            if m.id == info.id and m.raft != info.raft:
                raise MembershipConflict("id_taken", f"member {m.id} has address {m.raft}")
            if m.raft == info.raft and m.id != info.id:
                raise MembershipConflict("address_taken",
                                         f"address {m.raft} belongs to member {m.id}")
            if m == info or (m.id, m.raft) == (info.id, info.raft):
                return True
        return False

    async def remove(self, member_id: str, force: bool) -> dict[str, Any]:
        async with self._exclusive():
            self._require_leader()
            members = self.ctl.replica.book.members()
            target = next((m for m in members if m.id == member_id), None)
            if target is None:
                raise Rejection("not_found", f"no member {member_id}", "id")
            refusal = removal_refusal([m.raft for m in members], self._alive(), target.raft)
            if refusal is not None and (not force or refusal.code == "last_member"):
                raise refusal
            if target.raft == self.ctl.replica.config.raft_addr:
                await self._hand_over()
                st = self.ctl.status()
                raise NotLeader(st["leader"], st["leader_api"])
            index = await self._change("rem", target)
            return {"removed": target.to_dict(), "index": index, "forced": refusal is not None}

    def _exclusive(self) -> asyncio.Lock:
        if self._lock.locked():
            raise MembershipConflict("change_in_progress",
                                     "another membership change is in progress; retry after it")
        return self._lock

    async def _change(self, kind: str, info: MemberInfo) -> int:
        loop = asyncio.get_running_loop()
        denied_until = loop.time() + DENIED_RETRY_S
        while True:
            try:
                return await self.ctl.bridge.change_membership(change_payload(kind, info),
                                                               CHANGE_TIMEOUT_S)
            except LogNotApplied as exc:
                if exc.reason != "REQUEST_DENIED":
                    raise NotApplied(str(exc), self.ctl.status()["leader"]) from None
                if loop.time() >= denied_until:
                    raise MembershipConflict(
                        "change_in_progress", "the leader refused the change: the previous "
                        "one is not applied yet (or its term just began); retry") from None
                await asyncio.sleep(0.05)
            except LogOutcomeUnknown as exc:
                raise OutcomeUnknown(str(exc), "") from None

    async def _reachable(self, raft: str) -> None:
        """Refuse to add a member whose Raft port does not accept a connection from here:
        counted among the voters at once, it would weaken the quorum from the start."""
        host, _, port = raft.rpartition(":")
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), PROBE_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise MembershipConflict(
                "unreachable", f"{raft} does not accept connections from the leader: "
                f"{getattr(exc, 'strerror', None) or str(exc) or 'timed out'}",
                {"field": "raft"}) from None
        writer.close()

    async def _catch_up(self, raft: str, since: int) -> int | None:
        """Wait until `raft` holds the entry at `since` (the one adding it) and is within
        CAUGHT_UP_LAG of the commit index; its lag then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOIN_CATCH_UP_S
        steady_since: float | None = None
        # Whether it ever answered the leader: its match index moved, or the time since its
        # last answer (counted from the add until then) went down.
        answered, last_seen = False, None
        while True:
            self._require_leader()
            match, seen, connected = self.ctl.replica.peer_view().get(raft, (0, None, False))
            answered = answered or match > 0 or (
                seen is not None and last_seen is not None and seen < last_seen)
            last_seen = seen
            lag = max(self.ctl.replica.status().commit_index - match, 0)
            if (match >= since and lag <= CAUGHT_UP_LAG and connected
                    and seen is not None and seen <= STEADY_CONTACT_S):
                steady_since = steady_since or loop.time()
                if loop.time() - steady_since >= STEADY_S:
                    return lag
            else:
                steady_since = None
            if loop.time() >= deadline:
                # One that never answered is taken out again (a member that cannot be
                # reached only costs the quorum); a slow one stays and catches up.
                code = "not_caught_up" if answered else "never_connected"
                raise MembershipConflict(
                    code, f"{raft} was added but has not caught up after "
                    f"{JOIN_CATCH_UP_S:.0f} s (lag {lag})", {"index_lag": lag})
            await asyncio.sleep(0.05)

    async def autopilot(self, pilot: Autopilot, every_s: float = 1.0) -> None:
        """Run forever: while this replica leads, remove dead members as `pilot` says."""
        while True:
            await asyncio.sleep(every_s)
            if not pilot.enabled or self.ctl.leading_term() is None or self._lock.locked():
                continue
            try:
                row = dead_to_remove(self.peers(), pilot)
                if row is not None:
                    log.warning("autopilot: removing %s, silent for %s s", row["id"],
                                row["last_contact_s"])
                    await self.remove(row["id"], force=False)
            except Exception as exc:  # a lost election, a conflict: try again later
                log.info("autopilot: %s", exc)

    async def _hand_over(self) -> None:
        """Make another member leader (pysyncobj's TimeoutNow transfer needs a follower
        exactly caught up, so under load it may take a few tries)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TRANSFER_S
        me = self.ctl.replica.config.raft_addr
        while loop.time() < deadline:
            try:
                await self.ctl.bridge.transfer_leadership(None, 1.0)
            except LogNotApplied:
                await asyncio.sleep(0.02)
                continue
            until = loop.time() + 1.0
            while loop.time() < until:
                st = self.ctl.replica.status()
                if st.role != "leader" and st.leader not in (None, me):
                    return
                await asyncio.sleep(0.02)
        raise NotApplied("leadership could not be handed over in time", self.ctl.id)
