"""The agents' side door: one long-polled sync call that is heartbeat, report and orders.

Only the leader answers it. Every answer carries the leader's Raft term; an agent obeys
only the highest term it has seen, so a deposed leader that still believes in itself
cannot countermand the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from hacontrol.controller.errors import NotLeader
from hacontrol.model import keepalive, protocol
from hacontrol.model.errors import invalid
from hacontrol.model.messages import Assignment, DeltaAnswer, DeltaRequest, SyncRequest
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.scheduler.liveness import LONGEST_POLL_S, poll_seconds
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine
from hacontrol.state.views import sync_changes

from .auth import speaks_for
from .backend import Cluster, Store
from .openapi import WRITE_ERRORS, Operation, documented
from .request import (
    IDENTITY,
    cluster_of,
    controller_credential_hash,
    json_body,
    leader_of,
    ok,
    store_of,
)
from .schemas import SYNC_ANSWER, SYNC_REQUEST

# The longest long poll: a node stays alive while its poll is in flight, so this bounds how
# late a node cut off without a word (power, network) is noticed: MAX_WAIT_S + the grace.
MAX_WAIT_S = LONGEST_POLL_S
WAKE_CHECK_S = 0.25  # how soon polls leave a replica that stopped leading
NODE_WAITS = web.AppKey["NodeWaits"]("node_waits")


def _not_leader(cluster: Cluster) -> NotLeader:
    st = cluster.status()
    return NotLeader(st["leader"], st["leader_api"])


def _leading(request: web.Request) -> LeaderState:
    """This term's leader memory; raises NotLeader on a replica that does not lead."""
    leader = leader_of(request)
    if leader is None:
        raise _not_leader(cluster_of(request))
    return leader


@documented(Operation(
    "An agent's heartbeat, reports and long poll for its assignments (leader only)", "agent",
    description="Answers 503 not_leader, naming the leader, on any other replica. A request "
                "with `delta` gets only what changed since `delta.since` (see "
                "`model.messages.DeltaAnswer`); without it, every assignment with its spec.",
    body=SYNC_REQUEST, ok=SYNC_ANSWER, errors=WRITE_ERRORS))
async def sync(request: web.Request) -> web.Response:
    cluster = cluster_of(request)
    leader = _leading(request)
    body = await json_body(request)
    # Checked whole before anything is written: a bad value is a 422 naming its field, not
    # a failure to encode the command (a 500) or a bad entry in the log.
    message = SyncRequest.from_dict(body)
    name = message.node.name
    speaks_for(request, name)  # before the heartbeat: a node cannot keep another alive
    if message.node.address:
        check_address(message.node.address, "node.address")

    def connected() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    # So that `connected` turns false within seconds when the node vanishes mid-poll
    # (power, partition), not only when its host closes the connection.
    if request.transport is not None:
        keepalive.apply(request.transport.get_extra_info("socket"))

    # While this request is in flight the node counts as alive (slow, not dead), and its
    # answer counts as contact again.
    n = leader.sync_started(name, connected)
    try:
        return await _sync(request, cluster, leader, body, message)
    finally:
        leader.sync_ended(name, n)


async def _sync(request: web.Request, cluster: Cluster, leader: LeaderState,
                body: dict[str, Any], message: SyncRequest) -> web.Response:
    store = store_of(request)
    node = body["node"]
    name = message.node.name
    reports = body.get("reports") or []
    wait_s = min(message.wait_s, MAX_WAIT_S)

    me = request.get(IDENTITY)
    # A credential whose introduction token could still be exchanged registers (again):
    # its registration is what uses the introduction token up.
    fresh = me is not None and me.intro is not None

    def registered_as_is(m: StateMachine) -> bool:
        n = m.nodes.get(name)
        return (not fresh and n is not None and n.status == "ready" and n.address == node.get("address", "")
                and abs(n.capacity.cpu - float(node.get("cpu") or 0)) < 1e-9
                and n.capacity.memory_mb == node.get("memory_mb")
                and n.labels == (node.get("labels") or {})
                and n.attributes == (node.get("attributes") or {}))

    if not store.read_local(registered_as_is):
        await store.write(C.NODE_REGISTER, {"name": name, "cpu": node.get("cpu"),
                                          "memory_mb": node.get("memory_mb"),
                                          "address": node.get("address", ""),
                                          "labels": node.get("labels") or {},
                                          "attributes": node.get("attributes") or {}})
    metrics = body.get("metrics")
    if isinstance(metrics, dict):
        checked = check_metrics(metrics)
        # Only for this node's live allocations: a node cannot feed another's autoscaling.
        live, ended = store.read_local(lambda m: _live_and_ended(m, name))
        now = time.time()
        changed = False
        for alloc_id, values in checked.items():
            if alloc_id in live:
                leader.alloc_metrics[alloc_id] = values
                leader.alloc_history.record(name, alloc_id, values, now)
                changed = True
        for alloc_id in ended:  # the leader's memory keeps no metrics of ended allocations
            changed = leader.alloc_metrics.pop(alloc_id, None) is not None or changed
        if changed:
            leader.metrics_changed(name)
        leader.alloc_history.keep_only(name, live)
    if isinstance(body.get("agent"), dict) or message.busy is not None:
        info = dict(body["agent"]) if isinstance(body.get("agent"), dict) else {}
        if message.busy is not None:
            info["busy"] = message.busy  # shown in the node view, under `agent`
        # Which agents still run the older version, during a rolling upgrade.
        info["protocol"] = message.protocol
        leader.node_info[name] = info
    if message.restarting_s is not None:
        leader.restart_announced(name, message.restarting_s)
    acked = 0
    if reports:
        await store.write(C.ALLOC_UPDATE, {"node": name, "updates": reports})
        acked = len(reports)
    delta = message.delta
    if delta is not None:
        return await _answer_delta(request, cluster, store, name, delta, wait_s, acked)
    if wait_s > 0 and not reports:
        # Long poll: answer as soon as something changes for this node (its fingerprint
        # differs from the one the agent last got), or at the deadline.
        seen = body.get("fingerprint")
        waits = _waits(request, store, cluster)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while store.read_local(lambda m: node_fingerprint(m, name)) == seen:
            remaining = deadline - loop.time()
            if remaining <= 0 or not cluster.is_leader() or waits.closing:
                break
            await waits.wait(name, remaining)

    if not cluster.is_leader():
        raise _not_leader(cluster)
    term = cluster.term()
    index, fp, assignments, poll_s = store.read_local(
        lambda m: (m.index, node_fingerprint(m, name), m.node_assignments(name),
                   poll_seconds(len(m.nodes))))
    return ok(protocol.stamped(
        {"term": term, "leader": cluster.id, "index": index, "fingerprint": fp, "acked": acked,
         "allocations": assignments, "poll_s": poll_s,
         "controller_credential_sha256": controller_credential_hash(request)}))


async def _answer_delta(request: web.Request, cluster: Cluster, store: Store, name: str,
                        held: DeltaRequest, wait_s: float, acked: int) -> web.Response:
    """The answer to an agent that speaks the delta protocol: only what it lacks, waiting
    up to `wait_s` (unless it just reported) for something to change on its node."""
    def changes(m: StateMachine) -> tuple[int, str, list[Assignment], DeltaAnswer, float]:
        allocs, delta = sync_changes(m.store, name, held)
        return m.index, node_fingerprint(m, name), allocs, delta, poll_seconds(len(m.nodes))

    index, fp, allocs, delta, poll_s = store.read_local(changes)
    if wait_s > 0 and not acked and delta.since and not allocs and not delta.removed \
            and not delta.jobs:
        waits = _waits(request, store, cluster)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or not cluster.is_leader() or waits.closing:
                break
            # Registers before its first await: a change applied after the read above
            # wakes it.
            await waits.wait(name, remaining)
            index, fp, allocs, delta, poll_s = store.read_local(changes)
            if allocs or delta.removed or delta.jobs or not delta.since:
                break
    if not cluster.is_leader():
        raise _not_leader(cluster)
    # By orjson (request.dumps): encoding the answers was a fifth of the leader's sync work
    # while it placed 100,000 allocations on 5,000 nodes (py-spy).
    return ok(protocol.stamped({
        "term": cluster.term(), "leader": cluster.id, "index": index, "fingerprint": fp,
        "acked": acked, "allocations": [a.to_dict(with_spec=False) for a in allocs],
        "delta": delta.to_dict(), "poll_s": poll_s,
        "controller_credential_sha256": controller_credential_hash(request)}))


class NodeWaits:
    """Wakes the long polls of the nodes whose allocations changed.

    Waking every poll on every applied entry made each of thousands of waiting agents
    recompute its node's state for every write anywhere. One task per replica drains the
    store's `touched_nodes` after each burst of applied entries and wakes only those
    nodes' polls (and every poll once this replica stops leading, so agents move on).
    Job-only changes (a spec edited in place) touch no node: agents see them at their
    poll's deadline.
    """

    def __init__(self) -> None:
        self.waiters: dict[str, set[asyncio.Future[None]]] = {}
        self.task: asyncio.Task[None] | None = None
        self.closing = False  # the replica stops: every poll answers now

    def close(self) -> None:
        self.closing = True
        self.wake(list(self.waiters))

    def start(self, store: Store, cluster: Cluster) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._run(store, cluster))

    async def wait(self, node: str, timeout: float) -> None:
        if self.closing:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = self.waiters.setdefault(node, set())
        waiting.add(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            waiting.discard(fut)
            if not waiting and self.waiters.get(node) is waiting:
                del self.waiters[node]

    def wake(self, nodes: Iterable[str]) -> None:
        for node in nodes:
            for fut in self.waiters.get(node, ()):
                if not fut.done():
                    fut.set_result(None)

    async def _run(self, store: Store, cluster: Cluster) -> None:
        while True:
            await store.wait_changed(WAKE_CHECK_S)
            self.wake(store.read_local(_drain_touched))
            if not cluster.is_leader():
                self.wake(list(self.waiters))


def _drain_touched(m: StateMachine) -> set[str]:
    touched = m.store.touched_nodes
    m.store.touched_nodes = set()
    return touched


def _waits(request: web.Request, store: Store, cluster: Cluster) -> NodeWaits:
    waits = request.app[NODE_WAITS]
    waits.start(store, cluster)
    return waits


def _live_and_ended(m: StateMachine, node: str) -> tuple[set[str], list[str]]:
    live: set[str] = set()
    ended: list[str] = []
    for a in m.node_allocs(node):
        if a.terminal:
            ended.append(a.id)
        else:
            live.add(a.id)
    return live, ended


def check_address(value: Any, field: str) -> str:
    """An agent's address: `http(s)://host[:port]`, nothing else (no user, path, query or
    fragment), since the controllers build request URLs from it."""
    if not isinstance(value, str) or len(value) > 500 or any(c.isspace() for c in value):
        raise invalid(field, "must be a URL http(s)://host[:port]")
    try:
        u = urlsplit(value)
        port_ok = u.port is None or 0 < u.port < 65536
    except ValueError:
        port_ok = False
    if (not port_ok or u.scheme not in ("http", "https") or not u.hostname
            or u.username is not None or u.password is not None or u.path not in ("", "/")
            or u.query or u.fragment or "#" in value or "?" in value):
        raise invalid(field, "must be a URL http(s)://host[:port] with no path, query or "
                             "fragment")
    return value


def check_metrics(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each allocation's sampled metrics: finite numbers (or null) only; one NaN fed to the
    autoscaler would make every leader step raise."""
    out: dict[str, dict[str, Any]] = {}
    for alloc_id, values in raw.items():
        if not isinstance(values, dict):
            continue
        for key, v in values.items():
            ok_number = (v is None or (not isinstance(v, bool) and isinstance(v, int | float)
                                       and math.isfinite(v)))
            if not ok_number:
                raise invalid(f"metrics.{alloc_id}.{key}", "must be a finite number")
        out[alloc_id] = values
    return out


def node_fingerprint(m: StateMachine, name: str) -> str:
    """Changes whenever anything the node's agent is told changes: an allocation placed,
    stopped, lost or collected, or its job's spec (every such change stamps a new
    modify index on the allocation or the job)."""
    latest, count = 0, 0
    for a in m.node_allocs(name):
        count += 1
        latest = max(latest, a.modify_index)
        job = m.jobs.get((a.namespace, a.job))
        if job is not None:
            latest = max(latest, job.modify_index)
    return f"{count}.{latest}"


def register(app: web.Application) -> None:
    app[NODE_WAITS] = NodeWaits()

    async def stop_waking(app: web.Application) -> None:
        task = app[NODE_WAITS].task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def answer_polls(app: web.Application) -> None:
        # A stopping replica waits for its requests in flight: polls of up to `poll_s`
        # would hold its stop (and a rolling restart) that long.
        app[NODE_WAITS].close()

    app.on_shutdown.append(answer_polls)
    app.on_cleanup.append(stop_waking)
    app.router.add_post("/v1/agent/sync", sync)



