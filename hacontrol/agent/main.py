"""`hacontrol agent`: one node executor.

It registers its node, keeps the link to the leader, runs what the leader assigns through
the local `Supervisor`, and reports every state change. Processes keep running whatever the
controllers do; only orders from the current (highest-term) leader change them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hacontrol.agent.jitter import uniform
from hacontrol.agent.spec import AllocationEvent, AllocationSpec
from hacontrol.model.states import AllocState, DesiredState
from hacontrol.observe.logs import configure_logging
from hacontrol.reload import Changes, Reloader
from hacontrol.tls.context import TLSConfig, client_context, server_context
from hacontrol.tls.files import ExposedFile, private_dir, read_secret, restrict_files
from hacontrol.tls.settings import TLSSettingsError, daemon_tls

from . import procinfo
from .assignments import AssignmentDecoder, allocation_spec
from .credentials import NODE_CREDENTIAL_FILE, ControllerKey, JoinRefused, node_credential
from .http import build_agent_app
from .httpserver import serve
from .link import ControllerLink, poll_wait, retry_pause, wait_first
from .nursery import Nursery
from .ports import NoFreePort, PortBook
from .report import MetricsOutbox, event_report
from .scrape import Scraper, Target
from .supervisor import Supervisor

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("hacontrol.agent")
# What SIGHUP changes in a running agent (besides its TLS files, always re-read); the node's
# labels, attributes and capacity reach the controllers with the next sync. Its name, data
# directory, controllers and addresses need a restart.
# How long a sync may wait for starts in flight to report "running" (a start takes a few
# milliseconds; a burst's syncs then carry batches instead of a few reports each).
SETTLE_S = 0.05
LIVE = ("log-level", "log-format", "label", "attribute", "cpu", "memory-mb", "default-user")


def node_attributes() -> dict[str, str]:
    # os.uname, not platform.uname: the platform module is 0.3 MB the agent keeps.
    u = os.uname()
    return {"os": u.sysname.lower(), "arch": u.machine, "hostname": u.nodename,
            "kernel": u.release}


class Agent:
    def __init__(self, name: str, data_dir: Path, controllers: list[str], token: str,
                 cpu: float, memory_mb: int, address: str,
                 labels: dict[str, str] | None = None,
                 default_user: str | None = None,
                 link_tls: ssl.SSLContext | None = None,
                 attributes: dict[str, str] | None = None) -> None:
        self.name = name
        # who runs allocations whose spec names no user (see `default_user_for`)
        self.default_user = default_user
        self.node = {"name": name, "cpu": cpu, "memory_mb": memory_mb, "address": address,
                     "labels": dict(labels or {}),
                     "attributes": {**node_attributes(), **(attributes or {})}}
        self.last_contact = time.monotonic()
        # The long poll the leader last asked for (None: it did not say)
        self.poll_s: float | None = None
        # alloc id -> disconnect.stop_after_s for the allocations that asked for it
        self.disconnect_after: dict[str, float] = {}
        self.link = ControllerLink(controllers, token, link_tls)
        self.supervisor = Supervisor(data_dir, self._on_event)
        # Latest unacknowledged report per allocation: only the newest state matters.
        self.reports: dict[str, dict[str, Any]] = {}
        # Allocations whose latest report is "starting": their "running" follows within
        # milliseconds, and one sync carries both (see _settle). Set on every other report.
        self._reported_starting: set[str] = set()
        self._progress = asyncio.Event()
        self.wake = asyncio.Event()
        # Starts and stops in flight; awaited (or cancelled) when the agent ends.
        self._bg = Nursery(f"agent {name}")
        self._decoder = AssignmentDecoder()
        self._starting: set[str] = set()
        self._swept = False
        # Reconcile even an unchanged answer: a start raised before it was supervised.
        self._starting_failed = False
        self._metrics_out = MetricsOutbox()
        # The gauges of the jobs that scale on a prometheus metric, from their allocations.
        self.scraper = Scraper(self._running, self._env_of)
        self.ports = PortBook()

    def _running(self) -> set[str]:
        return {alloc_id for alloc_id, ev in self.supervisor.allocations().items()
                if ev.state == AllocState.RUNNING}

    def _env_of(self, alloc_id: str) -> dict[str, str] | None:
        spec = self.supervisor.spec(alloc_id)
        return spec.env if spec is not None else None

    def _on_event(self, ev: AllocationEvent) -> None:
        report = event_report(ev)
        ports = self.ports.get(ev.alloc_id)
        if ports:
            report["ports"] = ports  # the registry learns the dynamic ones from this
        self.reports[ev.alloc_id] = report
        if ev.state == AllocState.STARTING:
            self._reported_starting.add(ev.alloc_id)
        else:
            self._reported_starting.discard(ev.alloc_id)
            self._progress.set()
        self.wake.set()

    async def _settle(self, limit_s: float) -> None:
        """Wait until no report says "starting", at most `limit_s`: a restart's "starting"
        and "running" then go in one sync, and the sync's work does not compete with the
        start it reports (a crash-to-restart waited on it), nor a burst's syncs with every
        few starts."""
        deadline = time.monotonic() + limit_s
        while self._reported_starting:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), left)
            except TimeoutError:
                return

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        self._bg.start(coro)

    async def _start(self, spec: AllocationSpec) -> None:
        try:
            if await self.supervisor.adopt(spec) is None:
                await self.supervisor.ensure(spec)
        except Exception:
            log.exception("could not start %s", spec.alloc_id)
            self._starting_failed = True  # the next answer reconciles again, retrying it
        finally:
            self._starting.discard(spec.alloc_id)

    def reconcile(self, assignments: list[Any]) -> None:
        known = self.supervisor.allocations()
        wanted, rejected = self._decoder.decode(assignments)
        if not self._swept:
            self._swept = True
            self._sweep_orphans(set(wanted) | set(rejected) | set(known))
        self.disconnect_after = {
            alloc_id: a.spec.disconnect.stop_after_s
            for alloc_id, a in wanted.items()
            if a.spec is not None and a.spec.disconnect is not None
            and a.spec.disconnect.stop_after_s}
        scrape = {alloc_id: Target.of(a.spec.scaling.metric)
                  for alloc_id, a in wanted.items()
                  if a.desired == DesiredState.RUN and a.spec is not None
                  and a.spec.scaling is not None}
        self.scraper.set_targets({k: t for k, t in scrape.items() if t is not None})
        for alloc_id, why in rejected.items():
            if alloc_id not in known and alloc_id not in self._starting:
                self.reports[alloc_id] = {"id": alloc_id, "state": AllocState.FAILED,
                                          "message": f"bad spec: {why}"}
        self.ports.retain(set(wanted) | set(known))
        for alloc_id, a in wanted.items():
            if a.spec is not None and a.spec.ports and alloc_id not in known:
                # Before any port is picked: the ones re-adopted allocations hold.
                self.ports.recall(alloc_id, a.spec.ports, self.supervisor.alloc_dir(alloc_id))
        for alloc_id, a in wanted.items():
            if a.desired == DesiredState.RUN and a.spec is not None:
                if alloc_id not in known and alloc_id not in self._starting:
                    try:
                        ports = (self.ports.ports_for(alloc_id, a.spec.ports,
                                                      self.supervisor.alloc_dir(alloc_id))
                                 if a.spec.ports else None)
                        spec = allocation_spec(a, self.name, self.default_user, ports)
                    except NoFreePort as exc:
                        self.reports[alloc_id] = {"id": alloc_id, "state": AllocState.FAILED,
                                                  "message": str(exc)}
                        continue
                    except ValueError as exc:
                        self.reports[alloc_id] = {"id": alloc_id, "state": AllocState.FAILED,
                                                  "message": f"bad spec: {exc}"}
                        continue
                    self._starting.add(alloc_id)
                    self._spawn(self._start(spec))
            elif a.desired == DesiredState.STOP:
                if alloc_id in known:
                    self._spawn(self.supervisor.stop(alloc_id))
                elif alloc_id not in self._starting and alloc_id not in self.reports:
                    # Never ran here (or finished before this agent started): say so, so
                    # the controllers can let go of it.
                    self.reports[alloc_id] = {"id": alloc_id, "state": AllocState.STOPPED}
        for alloc_id in known:
            if alloc_id not in wanted and alloc_id not in rejected:
                # The leader no longer assigns it here (replaced while we were cut off,
                # or finished and collected): stop it and forget it.
                self._spawn(self._stop_and_forget(alloc_id))

    def _sweep_orphans(self, keep: set[str]) -> None:
        """Stop processes an earlier agent left behind for allocations no longer ours.

        They were replaced elsewhere while this node was cut off or its agent was down;
        leaving them would run duplicates. Only processes whose pid and start time match
        the record are touched.
        """
        root = self.supervisor.data_dir / "allocs"
        if not root.is_dir():
            return
        for d in sorted(root.iterdir()):
            if d.name in keep:
                continue
            record = procinfo.read_pid_record(d)
            if record is None or procinfo.matches(record) is None:
                continue
            log.warning("stopping %s (pid %d): no longer assigned to this node", d.name,
                        record.pid)
            self._spawn(self._reap_orphan(d.name, list(record.command or ["?"])))

    async def _reap_orphan(self, alloc_id: str, command: list[str]) -> None:
        spec = AllocationSpec(alloc_id=alloc_id, command=command)
        if await self.supervisor.adopt(spec) is not None:
            await self._stop_and_forget(alloc_id)

    def _extra(self) -> dict[str, Any]:
        # "Busy, alive": a node starting a burst says so, and the leader shows it.
        out: dict[str, Any] = {"agent": {
            "pid": os.getpid(), "isolation": self.supervisor.isolation_mode},
            "busy": {"starting": len(self._starting)}}
        try:
            # Only what changed since the leader was last told (it merges them).
            out["metrics"] = self._metrics_out.pending(self.supervisor.metrics(),
                                                       self._epoch(), self.scraper.values)
        except Exception:
            log.exception("metrics sampling failed")
        return out

    def _epoch(self) -> tuple[str, int]:
        """Who the metrics are told to: a new leader (or term) is told everything."""
        return (self.link.current, self.link.highest_term)

    def _enforce_disconnect(self) -> None:
        """Stop allocations whose job asked not to outlive a long cut-off from the leader.

        A partitioned node would otherwise keep running allocations the leader has already
        replaced elsewhere: duplicates.
        """
        silent = time.monotonic() - self.last_contact
        for alloc_id, limit in list(self.disconnect_after.items()):
            if silent >= limit and self.supervisor.active(alloc_id):
                log.warning("no leader for %.1fs: stopping %s (disconnect.stop_after_s=%g)",
                            silent, alloc_id, limit)
                self.disconnect_after.pop(alloc_id, None)
                self._spawn(self.supervisor.stop(alloc_id))

    async def _stop_and_forget(self, alloc_id: str) -> None:
        await self.supervisor.stop(alloc_id)
        self.supervisor.forget(alloc_id)
        self.reports.pop(alloc_id, None)
        self._reported_starting.discard(alloc_id)

    async def run(self, stop: asyncio.Event) -> None:
        self._bg.start(self.scraper.run(), name="scrape")
        failures = 0
        async with self.link:
            while not stop.is_set():
                self.wake.clear()
                if self._reported_starting:
                    await wait_first(stop, self._settle(SETTLE_S))
                sent = dict(self.reports)
                extra = self._extra()
                wait_s = 0.0 if sent else poll_wait(self.poll_s, bool(extra.get("metrics")))
                coro = self.link.sync(self.node, list(sent.values()), wait_s, extra=extra)
                answer = await (wait_first(self.wake, coro) if not sent else coro)
                if stop.is_set():
                    break
                if answer is None:
                    heard = self.link.heard_until
                    if heard is not None:
                        self.last_contact = max(self.last_contact, heard)
                    self._enforce_disconnect()
                    if not self.wake.is_set():  # not a poll cut short for a report
                        failures += 1
                        pause = retry_pause(failures, uniform())
                        await wait_first(stop, asyncio.sleep(pause))
                    continue
                failures = 0
                self.last_contact = time.monotonic()
                self.poll_s = answer.poll_s
                self._metrics_out.delivered(self._epoch())
                if answer.acked:
                    for alloc_id, rep in sent.items():
                        if self.reports.get(alloc_id) is rep:
                            del self.reports[alloc_id]
                            self._reported_starting.discard(alloc_id)
                if answer.changed or self._starting_failed:
                    self._starting_failed = False
                    self.reconcile(answer.allocations)
        log.info("agent %s stopping its processes", self.name)
        await self.supervisor.stop_all()
        await self._bg.aclose()


# How long the leader is asked to count a node as alive while its agent restarts
# (SIGQUIT); an agent that is not back by then is judged as any silent one.
RESTART_NOTICE_S = 30.0
NOTICE_TIMEOUT_S = 2.0


async def leave_running(agent: Agent) -> None:
    """SIGQUIT: exit now and leave every allocation running, for the next agent on this
    data directory to re-adopt (a rolling upgrade, docs/operations.md). First the leader is
    told the node is restarting, so that it does not mark it down (and replace its
    allocations) if the restart takes longer than the heartbeat grace. Nothing is stopped
    or cleaned: it is what a crash leaves, which re-adoption is built for."""
    log.warning("agent %s exiting and leaving its allocations running (SIGQUIT)", agent.name)
    try:
        told = await asyncio.wait_for(
            agent.link.sync(agent.node, [], 0.0, {"restarting_s": RESTART_NOTICE_S}),
            NOTICE_TIMEOUT_S)
        if told is None:
            log.warning("the leader was not told of the restart")
    except Exception as exc:  # exiting either way; say why the notice did not go
        log.warning("the leader was not told of the restart: %r", exc)
    logging.shutdown()
    os._exit(0)


async def _serve_health(host: str, port: int, agent: Agent | None, key: ControllerKey,
                        tls: ssl.SSLContext | None = None) -> asyncio.Server | None:
    if not port:
        return None
    app = build_agent_app(agent.supervisor if agent is not None else None, key.accepts)
    return await serve(app, host, port, tls)


def default_user_for(given: str | None, euid: int) -> str | None:
    """Who runs an allocation whose spec names no user: `--default-user` when given, else
    `nobody` when the agent runs as root (a job must ask for `user: root` to get it), else
    the agent's own user (it cannot change users anyway)."""
    if given:
        return given
    return "nobody" if euid == 0 else None


def agent_tls(args: Any) -> TLSConfig | None:
    """The agent's TLS settings; None without --tls-* flags (plain HTTP). Exits with a
    clear message on incomplete settings or a key others can read."""
    ca, cert, key = (getattr(args, n, None) for n in ("tls_ca", "tls_cert", "tls_key"))
    if ca is None and cert is None and key is None:
        return None
    try:
        return daemon_tls(ca, cert, key, insecure=False, who="hacontrol agent")
    except TLSSettingsError as exc:
        raise SystemExit(f"error: {exc}") from None


async def agent_main(args: Any) -> None:
    tls = agent_tls(args)
    scheme = "https" if tls is not None else "http"
    data_dir = Path(args.data_dir)
    try:
        # A credential kept from an earlier start is all it needs: the introduction token
        # is used up by then, and its file may be gone; the token is not read at all.
        joined = (data_dir / NODE_CREDENTIAL_FILE).exists()
        token = None if joined else _read_secret(getattr(args, "token_file", None),
                                                 "HACONTROL_TOKEN")
        intro = None if joined else _read_secret(getattr(args, "intro_token_file", None),
                                                 "HACONTROL_INTRO_TOKEN")
    except (ExposedFile, ValueError, OSError) as exc:
        raise SystemExit(f"error: hacontrol agent: {exc}") from None
    # Logs, pid records and credentials live here: no one else may read them. (Not a
    # umask: the agent's jobs would inherit it.)
    private_dir(data_dir)
    allocs = private_dir(data_dir / "allocs")
    for d in allocs.iterdir():  # as earlier versions left them
        if d.is_dir() and not d.is_symlink():
            private_dir(d)
            restrict_files(d, ("*.log*", "pid.json*"))
    key = ControllerKey(data_dir)
    link_tls = client_context(tls) if tls is not None else None
    try:
        credential = await node_credential(list(args.controllers), args.name, data_dir, key,
                                           intro, token, tls=link_tls)
    except (OSError, JoinRefused) as exc:
        raise SystemExit(f"agent {args.name}: cannot join: {exc}") from None
    cpu, mem = capacity(args)
    host = getattr(args, "bind", None) or "127.0.0.1"
    # The address the controllers use to reach this agent's API (logs, controls): given,
    # or the bind address, or the host name when bound to every interface.
    address = getattr(args, "advertise", None) or ""
    if not address and args.port:
        shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
        shown = f"[{shown}]" if ":" in shown else shown
        address = f"{scheme}://{shown}:{args.port}"
    if tls is not None and address and not address.startswith("https://"):
        raise SystemExit(f"error: hacontrol agent: with TLS --advertise must be https://, "
                         f"not {address}")
    labels = dict(getattr(args, "label", None) or [])
    try:
        agent = Agent(args.name, data_dir, list(args.controllers), credential, cpu, int(mem),
                      address, labels,
                      default_user_for(getattr(args, "default_user", None), os.geteuid()),
                      link_tls=link_tls,
                      attributes=dict(getattr(args, "attribute", None) or []))
    except ValueError as exc:
        raise SystemExit(f"error: hacontrol agent: {exc}") from None
    agent.link.on_controller_key = key.pin
    serve_tls = server_context(tls, require_client_cert=False) if tls is not None else None
    runner = await _serve_health(host, args.port, agent, key, serve_tls)
    live_tls = None
    if tls is not None:
        # Imported only with TLS: it loads the cryptography package (10 MB of the agent's
        # resident memory here) to read certificates on reload.
        from hacontrol.tls.reload import LiveContexts
        live_tls = LiveContexts(tls, [c for c in (serve_tls, link_tls) if c is not None])
    reloader = Reloader(f"agent {args.name}", args, LIVE,
                        lambda new, changes: reconfigure(agent, new, changes), live_tls, log)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        stop.set()
        agent.wake.set()  # cut a long poll short

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    leaving: list[asyncio.Task[None]] = []  # held: a task nobody holds may be collected

    def on_quit() -> None:
        if not leaving:
            leaving.append(loop.create_task(leave_running(agent)))

    loop.add_signal_handler(signal.SIGQUIT, on_quit)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    log.info("agent %s: cpu %.1f, memory %d MB, controllers %s, pid %d", args.name, cpu, mem,
             ",".join(args.controllers), os.getpid())
    await agent.run(stop)
    if runner is not None:
        runner.close()
        await runner.wait_closed()


def capacity(args: Any) -> tuple[float, int]:
    """(cpu, memory MB) to offer: as given, else what the host has."""
    cpu = args.cpu if args.cpu is not None else float(os.cpu_count() or 1)
    mem = args.memory_mb if args.memory_mb is not None else memory_total_mb()
    return float(cpu), int(mem)


def memory_total_mb() -> int:
    """The host's memory (/proc/meminfo's MemTotal), in MB."""
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"MemTotal:"):
                return int(line.split()[1]) // 1024
    raise OSError("no MemTotal in /proc/meminfo")


def reconfigure(agent: Agent, new: Any, changes: Changes) -> None:
    """SIGHUP's new settings: the node's description goes to the controllers at once (the
    leader registers the node again when its labels, attributes or capacity changed)."""
    if {"log-level", "log-format"} & set(changes.live):
        configure_logging(str(new.log_level), str(new.log_format))
    cpu, mem = capacity(new)
    agent.node = {**agent.node, "cpu": cpu, "memory_mb": mem,
                  "labels": dict(new.label or []),
                  "attributes": {**node_attributes(), **dict(new.attribute or [])}}
    agent.default_user = default_user_for(new.default_user, os.geteuid())
    agent.wake.set()  # cut the long poll short: the next sync carries it


def _read_secret(path: Any, env: str) -> str | None:
    """A secret from a file private to its owner (refused when others can read it or when
    it is empty), else from `env`."""
    if path:
        return read_secret(Path(path), "token file")
    return os.environ.get(env) or None


def run_agent(args: Any) -> None:
    configure_logging(str(args.log_level), getattr(args, "log_format", "text"))
    asyncio.run(agent_main(args))
