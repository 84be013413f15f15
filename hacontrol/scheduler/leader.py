"""The leader's duties: place pending allocations and notice dead nodes.

Runs on every replica but acts only while this replica is the Raft leader. Decisions are
pure functions (`placement`, `liveness`); this loop only reads a consistent view, asks
them, and proposes the outcome through the log, where it is checked again on apply.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from hacontrol.api.errors import ApiError
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.model import NODE_READY

from .liveness import DEFAULT_GRACE_S, nodes_to_mark_down
from .placement import Demand, NodeRoom, plan_placements

if TYPE_CHECKING:
    from hacontrol.server import Controller

log = logging.getLogger(__name__)

IDLE_WAKE_S = 0.25
MAX_PLACEMENTS_PER_PLAN = 500


def _view(m: StateMachine) -> tuple[list[Demand], list[NodeRoom], list[str]]:
    demands = [Demand(a.id, a.resources.cpu, a.resources.memory_mb)
               for a in m.pending_allocs()]
    rooms = []
    ready = []
    for n in m.nodes.values():
        if n.status != NODE_READY:
            continue
        ready.append(n.name)
        cpu, mem = m.node_free(n)
        rooms.append(NodeRoom(n.name, n.capacity.cpu, n.capacity.memory_mb, cpu, mem))
    return demands, rooms, ready


class LeaderLoop:
    def __init__(self, ctl: Controller, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.ctl = ctl
        self.grace_s = grace_s
        self.leader_since: float | None = None
        self.leader_term: int | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except ApiError as err:
                log.info("leader step: %s", err.message)
            except Exception:
                log.exception("leader step failed")
            await self.ctl.wait_changed(IDLE_WAKE_S)

    async def step(self) -> None:
        st = self.ctl.replica.status()
        if st.role != "leader":
            self.leader_since = None
            self.leader_term = None
            return
        if self.leader_term != st.term:
            self.leader_term = st.term
            self.leader_since = time.monotonic()
            self.ctl.heartbeats.clear()
            self.ctl.unplaced.clear()
            log.info("leading term %d", st.term)
        assert self.leader_since is not None
        demands, rooms, ready = self.ctl.replica.read(_view)

        for name in nodes_to_mark_down(ready, self.ctl.heartbeats, self.leader_since,
                                       time.monotonic(), self.grace_s):
            log.warning("node %s missed heartbeats for %.1fs: marking down", name, self.grace_s)
            await self.ctl.write(C.NODE_STATUS, {"name": name, "status": "down"})
            return  # the view changed; replan on the next step

        if not demands:
            self.ctl.unplaced.clear()
            return
        plan = plan_placements(demands, rooms)
        self.ctl.unplaced = plan.unplaced
        if plan.placements:
            batch = plan.placements[:MAX_PLACEMENTS_PER_PLAN]
            res = await self.ctl.write(C.PLAN, {"placements": [list(p) for p in batch]})
            if res.get("rejected"):
                log.info("plan: %d placed, %d rejected on apply", len(res["placed"]),
                         len(res["rejected"]))
