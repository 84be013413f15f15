"""One controller replica: the Raft replica, the leader's duties and the admin API.

`serve(args)` is what `hacontrol server` runs. The pieces meet here and nowhere else:
the state machine (`state/`), its log (`raft/`), the leader loop (`scheduler/`) and the HTTP
API (`api/`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from hacontrol import planted
from hacontrol.api.errors import ApiError, from_rejection
from hacontrol.raft.bridge import ApplyFailed, LogBridge, NotApplied, OutcomeUnknown
from hacontrol.raft.config import RaftTuning, ReplicaConfig
from hacontrol.raft.replica import Replica
from hacontrol.raft.safety import install_fence, require_secret
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

log = logging.getLogger("hacontrol.server")
T = TypeVar("T")

WRITE_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 5.0


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


class Controller:
    """Everything the API and the leader loop need from this replica."""

    def __init__(self, me: Member, peers: list[Member], replica: Replica,
                 machine: StateMachine) -> None:
        self.me = me
        self.members = sorted([me, *peers], key=lambda m: m.id)
        self.by_raft = {m.raft: m for m in self.members}
        self.replica = replica
        self.machine = machine
        self.bridge = LogBridge(replica)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._notify_pending = False
        # Leader-only memory: never replicated, rebuilt by every new leader.
        self.heartbeats: dict[str, float] = {}
        self.unplaced: dict[str, str] = {}
        # Per-instance metrics reported by agents (cpu_percent, rss_bytes, ...): leader memory
        # only, never through the log.
        self.alloc_metrics: dict[str, dict[str, Any]] = {}
        self.node_info: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        self.plant: str | None = None
        # Generated idempotency keys: unique per process start, cheaper than uuid4.
        self._key_prefix = f"{me.id}-{uuid.uuid4().hex[:12]}-"
        self._key_seq = itertools.count(1)

    # ----------------------------------------------------------- change feed

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._changed = asyncio.Event()
        self.machine.on_applied = self._on_applied

    def _on_applied(self, index: int, cmd: C.Command | None) -> None:
        # Runs on the Raft tick thread: coalesce wake-ups so a write burst costs the event
        # loop one callback, not one per entry.
        if self._notify_pending or self.loop is None:
            return
        self._notify_pending = True
        self.loop.call_soon_threadsafe(self._fire_changed)

    def _fire_changed(self) -> None:
        self._notify_pending = False
        assert self._changed is not None
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_changed(self, timeout: float) -> None:
        assert self._changed is not None
        ev = self._changed
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ heartbeats

    def record_heartbeat(self, node: str) -> None:
        self.heartbeats[node] = time.monotonic()

    def last_heartbeat(self, node: str) -> float | None:
        """Wall-clock time of the node's last heartbeat, as this leader saw it."""
        seen = self.heartbeats.get(node)
        return None if seen is None else time.time() - (time.monotonic() - seen)

    def local_event(self, kind: str, **payload: Any) -> None:
        """An event only this replica saw (e.g. it became leader); not replicated."""
        def add(m: StateMachine) -> None:
            m.add_event({"index": m.index, "ts": time.time(), "type": kind, **payload})
        self.replica.read(add)
        if self._changed is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self._fire_changed)

    # ----------------------------------------------------------------- raft

    def status(self) -> dict[str, Any]:
        st = self.replica.status()
        leader = self.by_raft.get(st.leader) if st.leader else None
        return {
            "id": self.me.id,
            "role": st.role,
            "leader": leader.id if leader else None,
            "leader_api": leader.api if leader else None,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "healthy": st.healthy,
            "pid": os.getpid(),
            "members": [{"id": m.id, "raft": m.raft, "api": m.api} for m in self.members],
        }

    def is_leader(self) -> bool:
        return self.replica.status().role == "leader"

    def term(self) -> int:
        return self.replica.status().term

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    timeout: float = WRITE_TIMEOUT_S) -> dict[str, Any]:
        """Propose a command and return its result; raise ApiError on any failure."""
        cmd = C.Command(op, time.time(), args, idem or f"{self._key_prefix}{next(self._key_seq)}")
        if self.plant == planted.EARLY_ACK:
            return await self._early_ack(cmd, timeout)
        try:
            result = await self.bridge.submit(cmd.encode(), timeout)
        except NotApplied as exc:
            raise ApiError("unavailable", f"not applied: {exc}", outcome="not_applied",
                           leader=self.status()["leader"]) from None
        except OutcomeUnknown as exc:
            raise ApiError("unavailable", f"outcome unknown: {exc}; retry with the same "
                           "Idempotency-Key", outcome="unknown", idempotency_key=cmd.idem) from None
        except ApplyFailed as exc:
            raise ApiError("internal", f"apply failed: {exc}") from None
        if not isinstance(result, dict):
            raise ApiError("internal", f"unexpected apply result {result!r}")
        if not result.get("ok"):
            raise from_rejection(result.get("error") or {})
        return result

    async def _early_ack(self, cmd: C.Command, timeout: float) -> dict[str, Any]:
        """Planted fault: answer as if applied while the entry may not even be committed."""
        task = asyncio.ensure_future(self.bridge.submit(cmd.encode(), timeout))
        task.add_done_callback(lambda t: t.exception())
        a = cmd.args

        def guess(m: StateMachine) -> dict[str, Any]:
            out: dict[str, Any] = {"ok": True, "index": -1, "changed": True}
            job = m.jobs.get((a.get("namespace", ""), a.get("name", "")))
            view = m.job_view(job) if job is not None else {
                "namespace": a.get("namespace"), "name": a.get("name"), "version": 0,
                "count": 0, "env": {}}
            if cmd.op == C.JOB_PUT:
                spec = a["spec"]
                same = job is not None and job.spec.to_dict() | {"count": 0} == \
                    spec | {"count": 0}
                view = {**view, "version": view["version"] + (0 if same else 1),
                        "count": spec["count"], "env": spec.get("env", {})}
            elif cmd.op == C.JOB_SCALE:
                view = {**view, "count": a["count"]}
            out["job"] = view
            if cmd.op == C.NS_PUT:
                out["namespace"] = {"name": a["name"], "quota": a["quota"],
                                    "usage": {}, "headroom": {}}
            return out
        return self.replica.read(guess)

    def _planted_quota_skip(self) -> bool:
        return self.replica.status().role != "leader"

    async def read(self, fn: Callable[[StateMachine], T], stale: bool = False) -> T:
        """Linearizable unless `stale`: a no-op goes through the log first."""
        if self.plant == planted.STALE_READ and not self.is_leader():
            stale = True
        if not stale:
            noop = C.Command(C.NOOP, 0.0, {}).encode()
            try:
                await self.bridge.barrier(noop, READ_TIMEOUT_S)
            except (NotApplied, OutcomeUnknown) as exc:
                raise ApiError("unavailable", f"no quorum for a linearizable read: {exc}; "
                               "use ?stale=true for a local read", outcome="not_applied") from None
        return self.replica.read(fn)


async def run_controller(args: Any) -> None:
    from hacontrol.api.app import build_app
    from hacontrol.scheduler.leader import LeaderLoop

    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = require_secret(Path(args.secret_file).read_text().strip())
    token = Path(args.token_file).read_text().strip()
    if not token:
        raise SystemExit(f"{args.token_file}: empty token")
    peers = [parse_peer(p) for p in (args.peer or [])]
    api_host, api_port = args.api.rsplit(":", 1)
    me = Member(args.id, args.raft, f"http://{args.api}")

    plant = planted.check_plant(getattr(args, "plant", None))
    install_fence()
    machine = StateMachine()
    tuning = RaftTuning()
    if getattr(args, "compaction_entries", None):
        tuning = replace(tuning, log_compaction_min_entries=int(args.compaction_entries))
    replica = Replica(ReplicaConfig(node_id=args.id, raft_addr=args.raft,
                                    peers=[p.raft for p in peers], data_dir=data_dir,
                                    secret=secret, tuning=tuning), machine)
    ctl = Controller(me, peers, replica, machine)
    if plant is not None:
        log.warning("PLANTED FAULT %s is active: this replica is deliberately broken", plant)
        ctl.plant = plant
        if plant == planted.QUOTA_SKIP:
            machine.planted_quota_skip = ctl._planted_quota_skip
    loop = asyncio.get_running_loop()
    ctl.attach_loop(loop)

    app = build_app(ctl, token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, api_host, int(api_port), reuse_address=True)
    await site.start()
    grace = getattr(args, "heartbeat_grace", None) or 3.0
    leader = LeaderLoop(ctl, grace_s=float(grace))
    leader_task = asyncio.create_task(leader.run())
    log.info("replica %s: raft %s, api %s, pid %d", args.id, args.raft, me.api, os.getpid())

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("replica %s stopping", args.id)
    leader_task.cancel()
    await runner.cleanup()
    replica.destroy()


def serve(args: Any) -> None:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run_controller(args))
