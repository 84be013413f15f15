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

import uvloop
from aiohttp import web

from hacontrol import planted
from hacontrol.acl.secrets import accessor_for, controller_credential, hash_secret
from hacontrol.alerts.sealing import Sealer
from hacontrol.alerts.wiring import start_alerts
from hacontrol.api.alert_routes import use_sealer
from hacontrol.api.app import build_app
from hacontrol.api.limits import LimitedStore, Limits
from hacontrol.api.request import STORE
from hacontrol.controller.membership import Autopilot, Membership
from hacontrol.controller.replica import Controller
from hacontrol.controller.status import Member, parse_peer
from hacontrol.join import JoinClient, JoinRefused
from hacontrol.observe.logs import configure_logging
from hacontrol.observe.metrics import ServerMetrics, TimedMachine
from hacontrol.raft.collector import Collector, sweep_now_and_then
from hacontrol.raft.config import Durability, RaftTuning, ReplicaConfig
from hacontrol.raft.membership import MemberBook, MemberInfo, read_record
from hacontrol.raft.replica import Replica
from hacontrol.raft.safety import install_fence, require_secret
from hacontrol.reload import Changes, Reloader
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.scheduler.loop import HealthProbe, LeaderLoop
from hacontrol.scheduler.upkeep import (
    keep_controller_credential,
    propose_until,
    prune_expired_tokens,
)
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.tls.context import TLSConfig, client_context, server_context
from hacontrol.tls.files import ExposedFile, private_dir, read_secret, restrict_files
from hacontrol.tls.reload import LiveContexts
from hacontrol.tls.roles import Role
from hacontrol.tls.settings import TLSSettingsError, daemon_tls

log = logging.getLogger("hacontrol.server")
# Connections the kernel queues for the API while the event loop is busy (the kernel caps
# it at net.core.somaxconn). A SYN that finds the queue full is dropped and sent again a
# second later, and after an election thousands of agents dial the new leader at once: with
# aiohttp's 128, 471 of 600 connects to a stopped replica were dropped
# (tests/integration/test_api_backlog.py), and one `bench/scheduler.py --scale` run with
# 5,000 nodes saw 41,602 connect time-outs of 1 s.
API_BACKLOG = 4096
LIMIT_FLAGS = ("max_body_bytes", "max_jobs", "max_namespaces", "max_nodes")
# What SIGHUP changes in a running replica (besides its TLS files, always re-read). The
# request body cap is fixed when the HTTP server is made; membership, addresses, storage
# and Raft tuning need a restart.
LIVE = ("log-level", "log-format", "heartbeat-grace", "max-jobs", "max-namespaces",
        "max-nodes")


async def bootstrap_configured(ctl: Controller, token: str) -> None:
    """Make the configured token the cluster's first management token, unless the cluster
    is already bootstrapped (then the configured token is whatever the state says of it:
    revoking it sticks across restarts). Every replica proposes the same command under the
    same idempotency key, so however many propose it, it applies once."""
    secret_hash = hash_secret(token)
    accessor = accessor_for(secret_hash)
    args = {"accessor_id": accessor, "secret_hash": secret_hash, "name": "configured"}
    refused = await propose_until(
        lambda: ctl.read_local(lambda m: m.acl_bootstrapped),
        lambda: ctl.write(C.ACL_BOOTSTRAP, args, idem=f"acl-bootstrap-{accessor}"),
        "the bootstrap of the configured token", 0.2)
    if refused is None:  # else bootstrapped meanwhile, by someone else
        log.info("ACLs bootstrapped")


async def run_controller(args: Any) -> None:
    try:
        tls = daemon_tls(args.tls_ca, args.tls_cert, args.tls_key,
                         insecure=bool(args.insecure_http), who="hacontrol server")
    except TLSSettingsError as exc:
        raise SystemExit(f"error: {exc}") from None
    scheme = "https" if tls is not None else "http"
    try:
        secret = require_secret(read_secret(Path(args.secret_file), "cluster secret file"))
        # The configured token becomes the first management token; without one the
        # cluster starts locked until `hacontrol acl bootstrap`.
        token = (read_secret(Path(args.token_file), "token file")
                 if getattr(args, "token_file", None) else "")
    except (ExposedFile, ValueError, OSError) as exc:
        raise SystemExit(f"error: hacontrol server: {exc}") from None
    # Everything this process creates (the journal and dump pysyncobj writes, too) is
    # private to its user; the server starts no other programs that would inherit this.
    os.umask(0o077)
    data_dir = Path(args.data_dir)
    private_dir(data_dir)
    restrict_files(data_dir, ("raft.*",))  # the journal and dump, as earlier versions left them
    peers = [parse_peer(p) for p in (args.peer or [])]
    api_host, api_port = args.api.rsplit(":", 1)
    me = Member(args.id, args.raft, f"{scheme}://{args.api}")
    for p in peers:
        if not p.api.startswith(f"{scheme}://"):
            raise SystemExit(f"error: --peer {p.id}: its API address must be {scheme}:// "
                             f"like this replica's, got {p.api}")

    client_tls = client_context(tls) if tls is not None else None
    book, joiner = await membership_at_start(args, me, peers, data_dir, token, client_tls)

    plant = planted.check_plant(getattr(args, "plant", None))
    unsafe = planted.check_unsafe_no_fsync(bool(getattr(args, "unsafe_no_fsync", False)))
    install_fence()
    collector = Collector()
    collector.install()
    machine = StateMachine()
    metrics = ServerMetrics()
    metrics.watch_gc(collector)
    tuning = RaftTuning()
    if getattr(args, "compaction_entries", None):
        tuning = replace(tuning, log_compaction_min_entries=int(args.compaction_entries))
    if getattr(args, "raft_heartbeat_before_bytes", None) is not None:
        tuning = replace(tuning, heartbeat_before_bytes=int(args.raft_heartbeat_before_bytes))
    if getattr(args, "raft_long_apply_grace", None) is not None:
        tuning = replace(tuning, long_apply_grace=float(args.raft_long_apply_grace))
    replica = Replica(ReplicaConfig(node_id=args.id, raft_addr=args.raft,
                                    peers=[p.raft for p in book.members()
                                           if p.raft != me.raft],
                                    data_dir=data_dir, secret=secret, tuning=tuning,
                                    durability=Durability.choose(unsafe, plant)),
                      TimedMachine(machine, metrics.apply),
                      book)
    if not replica.durable:
        log.warning("FSYNC IS OFF (%s): a power cut loses acknowledged writes",
                    "--unsafe-no-fsync" if unsafe else f"--plant {plant}")
    if replica.storage_error is not None:
        log.critical("serving nothing (readiness 503): %s", replica.storage_error)
    if plant is not None:
        log.warning("PLANTED FAULT %s is active: this replica is deliberately broken", plant)
    ctl = planted.controller_class(plant)(me, peers, replica, machine, metrics)
    loop = asyncio.get_running_loop()
    ctl.attach_loop(loop)
    leadership = Leadership(ctl.leading_term)

    limits = limits_of(args)
    membership = Membership(ctl)
    app = build_app(ctl, ctl, leadership, controller_credential(secret), limits,
                    bootstrap_token=bool(token), agent_tls=client_tls, membership=membership,
                    metrics=metrics)
    sealer = Sealer(secret)  # webhook secrets enter the log sealed with the cluster secret
    use_sealer(app, sealer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    api_tls = server_context(tls, require_client_cert=False) if tls is not None else None
    site = web.TCPSite(runner, api_host, int(api_port), reuse_address=True,
                       ssl_context=api_tls, backlog=API_BACKLOG)
    await site.start()
    dns_transport = None
    if getattr(args, "dns", None):
        # Imported only when asked for: dnspython is an eighth of a replica's start-up CPU.
        from hacontrol.api.dns import registry_lookup, serve_dns
        dns_host, dns_port = args.dns.rsplit(":", 1)
        dns_transport = await serve_dns(dns_host, int(dns_port), registry_lookup(ctl),
                                        args.dns_namespace or ["default"])
    grace = getattr(args, "heartbeat_grace", None) or 3.0
    probe_tls = client_context(tls) if tls is not None else None
    leader = LeaderLoop(ctl, leadership, ctl.wait_changed,
                        on_elected=lambda term: ctl.local_event("leader_elected", leader=me.id,
                                                                term=term),
                        grace_s=float(grace),
                        probe=HealthProbe(probe_tls) if probe_tls is not None else None,
                        metrics=metrics)
    leader_task = asyncio.create_task(leader.run())
    live_tls = None
    alerts_task = start_alerts(ctl, leadership, membership, sealer)
    if tls is not None:
        # Peers' status is open: their CA is all it takes (no client certificate).
        peers_tls = client_context(TLSConfig(ca=tls.ca))
        ctl.versions.tls = peers_tls
        ctl.versions.server_name = Role.SERVER.hostname
        live_tls = LiveContexts(tls, [c for c in (api_tls, client_tls, probe_tls)
                                      if c is not None], [peers_tls])
    versions_task = asyncio.create_task(ctl.versions.run())
    bootstrap_task = asyncio.create_task(bootstrap_configured(ctl, token)) if token else None
    upkeep = [asyncio.create_task(keep_controller_credential(ctl, controller_credential(secret))),
              asyncio.create_task(prune_expired_tokens(ctl, leadership)),
              asyncio.create_task(sweep_now_and_then(
                  collector, lambda: ctl.leading_term() is not None))]
    pilot = Autopilot(bool(getattr(args, "cleanup_dead_servers", False)),
                      int(getattr(args, "min_quorum", None) or 3),
                      float(getattr(args, "dead_server_after", None) or 30.0))
    pilot_task = asyncio.create_task(membership.autopilot(pilot)) if pilot.enabled else None
    join_task = (asyncio.create_task(ask_to_join(joiner, MemberInfo(me.id, me.raft, me.api),
                                                 replica))
                 if joiner is not None else None)
    log.info("replica %s: raft %s, api %s, pid %d", args.id, args.raft, me.api, os.getpid())

    def apply(new: Any, changes: Changes) -> None:
        if {"log-level", "log-format"} & set(changes.live):
            configure_logging(str(new.log_level), str(new.log_format))
        leader.grace_s = float(new.heartbeat_grace or 3.0)
        store = app[STORE]
        if isinstance(store, LimitedStore):
            store.limits = replace(limits_of(new), max_body_bytes=store.limits.max_body_bytes)

    reloader = Reloader(f"replica {args.id}", args, LIVE, apply, live_tls, log)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    await stop.wait()
    log.info("replica %s stopping", args.id)
    leader_task.cancel()
    alerts_task.cancel()
    versions_task.cancel()
    for task in upkeep:
        task.cancel()
    for maybe in (bootstrap_task, join_task, pilot_task):
        if maybe is not None:
            maybe.cancel()
    if dns_transport is not None:
        dns_transport.close()
    await runner.cleanup()
    replica.destroy()


def limits_of(args: Any) -> Limits:
    return Limits(**{f: getattr(args, f) for f in LIMIT_FLAGS
                     if getattr(args, f, None) is not None})


async def membership_at_start(args: Any, me: Member, peers: list[Member], data_dir: Path,
                              token: str, tls: Any) -> tuple[MemberBook, JoinClient | None]:
    """Whom this replica starts with. The data directory's membership record wins over
    --peer and --join: once a replica has been part of the cluster, the log decides its
    membership, never its command line (pysyncobj #133: its dump's topology overrides
    configured peers). Without a record: --join asks a running cluster for its members,
    --peer gives them."""
    info = MemberInfo(me.id, me.raft, me.api)
    join_urls = [u.strip() for u in (getattr(args, "join", None) or "").split(",") if u.strip()]
    try:
        record = read_record(data_dir)
    except ValueError as exc:
        raise SystemExit(f"error: hacontrol server: {exc}") from None
    joiner = JoinClient(join_urls, token, tls) if join_urls else None
    if record is not None:
        members, recorded_self = record
        if recorded_self is not None and (recorded_self.id, recorded_self.raft) != (me.id,
                                                                                    me.raft):
            raise SystemExit(f"error: hacontrol server: {data_dir} belongs to replica "
                             f"{recorded_self.id} at {recorded_self.raft}")
        others = [m for m in members if m.raft != me.raft]
        flagged = {p.raft for p in peers}
        if flagged and flagged != {m.raft for m in others}:
            log.warning("membership from %s/members.json (%s) overrides --peer (%s)",
                        data_dir, ", ".join(m.id for m in others),
                        ", ".join(p.id for p in peers))
        joining = me.raft not in {m.raft for m in members}
        if not joining:
            joiner = None
        book = MemberBook(data_dir, info, others, joining=joining)
    elif joiner is not None:
        if not token:
            raise SystemExit("error: hacontrol server: --join needs --token-file (a token "
                             "allowed operator writes)")
        try:
            members = await joiner.fetch_members()
        except JoinRefused as exc:
            raise SystemExit(f"error: hacontrol server --join: {exc}") from None
        log.info("joining a cluster of %s", ", ".join(m.id for m in members))
        book = MemberBook(data_dir, info, [m for m in members if m.raft != me.raft],
                          joining=True)
    else:
        book = MemberBook(data_dir, info, [MemberInfo(p.id, p.raft, p.api) for p in peers])
    book.save()
    return book, joiner


async def ask_to_join(joiner: JoinClient, me: MemberInfo, replica: Replica) -> None:
    # Not before this replica listens on its Raft port: the leader counts a new member
    # among the voters from the moment it adds it, and one it cannot reach weakens the
    # quorum (the replica's health and log say why it does not listen).
    while not replica.listening():
        await asyncio.sleep(0.1)
    try:
        answer = await joiner.join(me)
    except JoinRefused as exc:
        log.error("join refused: %s", exc)
        return
    log.info("joined the cluster: caught up after %s s (index lag %s)",
             answer.get("catch_up_s"), answer.get("index_lag"))


def serve(args: Any) -> None:
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    # uvloop rather than asyncio's own loop: the same replica spends 4-10 % less CPU per
    # write and read under 64 clients (bench/README.md, "The controllers' event loop"). The agent
    # stays on asyncio's loop: it must stay small (its RSS is a measured figure).
    uvloop.run(run_controller(args))
