"""Starting the alert runner on a replica (kept apart from `server.py`, which only calls
`start_alerts`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from hacontrol.controller.membership import Membership
from hacontrol.controller.replica import Controller
from hacontrol.health.view import ReplicaRow
from hacontrol.scheduler.leader_state import Leadership

from .runner import AlertRunner, HeardLeader
from .sealing import Sealer

PROBE_TIMEOUT_S = 1.0


def leader_replicas(membership: Membership) -> list[ReplicaRow]:
    """The replicas as the leader sees them (raises `NotLeader` elsewhere)."""
    return [ReplicaRow(r["id"], r["alive"], r["index_lag"]) for r in membership.peers()]


def leader_prober(ctl: Controller) -> HeardLeader:
    """The leader this replica hears: itself when it leads, else the leader Raft names if
    that one answers `GET /v1/status` as leader. pysyncobj starts no election while it is
    connected to nobody, so a follower left alone keeps naming its dead leader: asking it is
    how that follower learns there is none (`leaderless.py`)."""
    async def heard(session: aiohttp.ClientSession) -> str | None:
        st = ctl.status()
        leader, api = st["leader"], st["leader_api"]
        if leader is None or st["role"] == "leader" or not api:
            return leader
        body: Any = None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
            # Peers' status is open: the CA (the versions watch's context) is all it takes.
            async with session.get(f"{api.rstrip('/')}/v1/status",
                                   ssl=ctl.versions.tls or True,
                                   server_hostname=ctl.versions.server_name,
                                   timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
                                   ) as resp:
                if resp.status == 200:
                    body = await resp.json(content_type=None)
        ok = isinstance(body, dict) and body.get("role") == "leader" and body.get("id") == leader
        return leader if ok else None
    return heard


def start_alerts(ctl: Controller, leadership: Leadership, membership: Membership,
                 sealer: Sealer) -> asyncio.Task[None]:
    runner = AlertRunner(ctl, leadership, lambda: leader_replicas(membership),
                         lambda: ctl.status()["leader"], sealer=sealer, term=ctl.term,
                         me=ctl.me.id, heard_leader=leader_prober(ctl))
    return asyncio.create_task(runner.run())
