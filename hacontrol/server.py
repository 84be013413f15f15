"""`hacontrol server`: one controller replica, wired together.

The pieces meet here and nowhere else: the state machine (`state/`), its log (`raft/`), the
replica that writes and reads through it (`controller/`), the leader loop (`scheduler/`)
and the HTTP API (`api/`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiohttp import web

from hacontrol import planted
from hacontrol.api.app import build_app
from hacontrol.controller.status import Member, parse_peer
from hacontrol.raft.config import Durability, RaftTuning, ReplicaConfig
from hacontrol.raft.replica import Replica
from hacontrol.raft.safety import install_fence, require_secret
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.loop import LeaderLoop
from hacontrol.state.machine import StateMachine

log = logging.getLogger("hacontrol.server")


async def run_controller(args: Any) -> None:
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
    unsafe = planted.check_unsafe_no_fsync(bool(getattr(args, "unsafe_no_fsync", False)))
    install_fence()
    machine = StateMachine()
    tuning = RaftTuning()
    if getattr(args, "compaction_entries", None):
        tuning = replace(tuning, log_compaction_min_entries=int(args.compaction_entries))
    replica = Replica(ReplicaConfig(node_id=args.id, raft_addr=args.raft,
                                    peers=[p.raft for p in peers], data_dir=data_dir,
                                    secret=secret, tuning=tuning,
                                    durability=Durability.choose(unsafe, plant)), machine)
    if not replica.durable:
        log.warning("FSYNC IS OFF (%s): a power cut loses acknowledged writes",
                    "--unsafe-no-fsync" if unsafe else f"--plant {plant}")
    if replica.storage_error is not None:
        log.critical("serving nothing (readiness 503): %s", replica.storage_error)
    if plant is not None:
        log.warning("PLANTED FAULT %s is active: this replica is deliberately broken", plant)
    ctl = planted.controller_class(plant)(me, peers, replica, machine)
    loop = asyncio.get_running_loop()
    ctl.attach_loop(loop)
    leadership = Leadership(ctl.leading_term)

    app = build_app(ctl, ctl, leadership, token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, api_host, int(api_port), reuse_address=True)
    await site.start()
    grace = getattr(args, "heartbeat_grace", None) or 3.0
    leader = LeaderLoop(ctl, leadership, ctl.wait_changed,
                        on_elected=lambda term: ctl.local_event("leader_elected", leader=me.id,
                                                                term=term),
                        grace_s=float(grace))
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
