"""Faults planted on purpose, so the chaos suite can show that its checkers catch them.

Off unless a server is started with `--plant NAME`, and refused even then unless the
environment says this is a test (`HACONTROL_ALLOW_PLANTED_FAULTS=1`). Never enable these on
a cluster that holds anything of value.

Each fault is a `Controller` subclass that wraps one of its paths (`controller_class`
picks it); the real controller and state machine contain no trace of them, except the
state machine's one hook that `QuotaSkip` fills in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

from hacontrol.controller.replica import WRITE_TIMEOUT_S, Controller, Result
from hacontrol.controller.status import Member
from hacontrol.observe.metrics import ServerMetrics
from hacontrol.raft.config import NO_FSYNC, VOTE_NO_FSYNC
from hacontrol.raft.replica import Replica
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

T = TypeVar("T")

STALE_READ = "stale-read"  # followers answer "linearizable" reads from local state
QUOTA_SKIP = "quota-skip"  # followers skip the quota check when applying
EARLY_ACK = "early-ack"  # writes are acknowledged before their entry commits

PLANTS = (STALE_READ, QUOTA_SKIP, EARLY_ACK)
# Faults of the storage layer, not of the controller: the Raft journal skips fsyncs (see
# `Durability` in hacontrol/raft/config.py); the chaos suite's power-loss nemeses catch them.
STORAGE_PLANTS = (NO_FSYNC, VOTE_NO_FSYNC)
ALLOW_ENV = "HACONTROL_ALLOW_PLANTED_FAULTS"


class PlantRefused(SystemExit):
    pass


def check_plant(name: str | None) -> str | None:
    if not name:
        return None
    if name not in PLANTS + STORAGE_PLANTS:
        raise PlantRefused(f"--plant {name!r}: unknown; one of "
                           f"{', '.join(PLANTS + STORAGE_PLANTS)}")
    if os.environ.get(ALLOW_ENV) != "1":
        raise PlantRefused(f"--plant {name} is a test-only fault and is refused outside tests "
                           f"(set {ALLOW_ENV}=1 in a test environment)")
    return name


def check_unsafe_no_fsync(enabled: bool) -> bool:
    """`--unsafe-no-fsync` (nothing fsynced: a power cut loses acknowledged writes) is a
    test-only switch, refused like a planted fault."""
    if enabled and os.environ.get(ALLOW_ENV) != "1":
        raise PlantRefused(f"--unsafe-no-fsync loses acknowledged writes on a power cut and is "
                           f"refused outside tests (set {ALLOW_ENV}=1 in a test environment)")
    return enabled


class StaleRead(Controller):
    """Followers serve "linearizable" reads from their local, possibly stale, state."""

    async def read(self, fn: Callable[[StateMachine], T], stale: bool = False) -> T:
        return await super().read(fn, stale or not self.is_leader())


class QuotaSkip(Controller):
    """Followers skip the quota check when they apply: their state diverges."""

    def __init__(self, me: Member, peers: list[Member], replica: Replica,
                 machine: StateMachine, metrics: ServerMetrics | None = None) -> None:
        super().__init__(me, peers, replica, machine, metrics)
        machine.planted_quota_skip = lambda: not self.is_leader()


class EarlyAck(Controller):
    """Writes answer as if applied while their entry may not even be committed."""

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    timeout: float = WRITE_TIMEOUT_S, actor: str | None = None) -> Result:
        cmd = self.command(op, args, idem, actor)
        task = asyncio.ensure_future(self.bridge.submit(cmd.encode(), timeout))
        task.add_done_callback(lambda t: t.exception())
        return self.read_local(lambda m: _guess(m, cmd))


def _guess(m: StateMachine, cmd: C.Command) -> Result:
    """The result the command would probably have, from the state before it."""
    a = cmd.args
    out: Result = {"ok": True, "index": -1, "changed": True}
    job = m.jobs.get((a.get("namespace", ""), a.get("name", "")))
    view = m.job_view(job) if job is not None else {
        "namespace": a.get("namespace"), "name": a.get("name"), "version": 0,
        "count": 0, "env": {}}
    if cmd.op == C.JOB_PUT:
        spec = a["spec"]
        same = job is not None and job.spec.to_dict() | {"count": 0} == spec | {"count": 0}
        view = {**view, "version": view["version"] + (0 if same else 1),
                "count": spec["count"], "env": spec.get("env", {})}
    elif cmd.op == C.JOB_SCALE:
        view = {**view, "count": a["count"]}
    out["job"] = view
    if cmd.op == C.NS_PUT:
        out["namespace"] = {"name": a["name"], "quota": a["quota"], "usage": {}, "headroom": {}}
    return out


def controller_class(plant: str | None) -> type[Controller]:
    """The controller to run: the real one, or the one with `plant` wrapped around it."""
    faulty: dict[str, type[Controller]] = {STALE_READ: StaleRead, QUOTA_SKIP: QuotaSkip,
                                           EARLY_ACK: EarlyAck}
    return Controller if plant is None or plant in STORAGE_PLANTS else faulty[plant]
