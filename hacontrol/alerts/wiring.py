"""Starting the alert runner on a replica (kept apart from `server.py`, which only calls
`start_alerts`)."""

from __future__ import annotations

import asyncio

from hacontrol.controller.membership import Membership
from hacontrol.controller.replica import Controller
from hacontrol.health.view import ReplicaRow
from hacontrol.scheduler.leader_state import Leadership

from .runner import AlertRunner
from .sealing import Sealer


def leader_replicas(membership: Membership) -> list[ReplicaRow]:
    """The replicas as the leader sees them (raises `NotLeader` elsewhere)."""
    return [ReplicaRow(r["id"], r["alive"], r["index_lag"]) for r in membership.peers()]


def start_alerts(ctl: Controller, leadership: Leadership, membership: Membership,
                 sealer: Sealer) -> asyncio.Task[None]:
    runner = AlertRunner(ctl, leadership, lambda: leader_replicas(membership),
                         lambda: ctl.status()["leader"], sealer=sealer, term=ctl.term,
                         me=ctl.me.id)
    return asyncio.create_task(runner.run())
