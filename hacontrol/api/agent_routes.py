"""The agents' side door: one long-polled sync call that is heartbeat, report and orders.

Only the leader answers it. Every answer carries the leader's Raft term; an agent obeys
only the highest term it has seen, so a deposed leader that still believes in itself
cannot countermand the new one.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from hacontrol.controller.errors import NotLeader
from hacontrol.model.errors import invalid
from hacontrol.model.messages import SyncRequest
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .auth import speaks_for
from .backend import Cluster
from .openapi import WRITE_ERRORS, Operation, documented
from .request import cluster_of, controller_credential_hash, json_body, leader_of, store_of
from .schemas import SYNC_ANSWER, SYNC_REQUEST

MAX_WAIT_S = 2.0


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
    description="Answers 503 not_leader, naming the leader, on any other replica.",
    body=SYNC_REQUEST, ok=SYNC_ANSWER, errors=WRITE_ERRORS))
async def sync(request: web.Request) -> web.Response:
    cluster, store = cluster_of(request), store_of(request)
    leader = _leading(request)
    body = await json_body(request)
    # Checked whole before anything is written: a bad value is a 422 naming its field, not
    # a failure to encode the command (a 500) or a bad entry in the log.
    message = SyncRequest.from_dict(body)
    node = body["node"]
    name = message.node.name
    speaks_for(request, name)  # before the heartbeat: a node cannot keep another alive
    address = node.get("address", "")
    if address:
        check_address(address, "node.address")
    reports = body.get("reports") or []
    wait_s = min(message.wait_s, MAX_WAIT_S)
    leader.record_heartbeat(name)

    def registered_as_is(m: StateMachine) -> bool:
        n = m.nodes.get(name)
        return (n is not None and n.status == "ready" and n.address == node.get("address", "")
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
        leader.alloc_metrics.update({k: v for k, v in checked.items() if k in live})
        for alloc_id in ended:  # the leader's memory keeps no metrics of ended allocations
            leader.alloc_metrics.pop(alloc_id, None)
    if isinstance(body.get("agent"), dict):
        leader.node_info[name] = body["agent"]
    acked = 0
    if reports:
        await store.write(C.ALLOC_UPDATE, {"node": name, "updates": reports})
        acked = len(reports)
    elif wait_s > 0:
        # Long poll: answer as soon as something changes for this node (its fingerprint
        # differs from the one the agent last got), or at the deadline. Waking on every
        # applied entry would answer every agent for every write anywhere.
        seen = body.get("fingerprint")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while store.read_local(lambda m: node_fingerprint(m, name)) == seen:
            remaining = deadline - loop.time()
            if remaining <= 0 or not cluster.is_leader():
                break
            await store.wait_changed(remaining)

    if not cluster.is_leader():
        raise _not_leader(cluster)
    term = cluster.term()
    index, fp, assignments = store.read_local(
        lambda m: (m.index, node_fingerprint(m, name), m.node_assignments(name)))
    return web.json_response({"term": term, "leader": cluster.id, "index": index,
                              "fingerprint": fp, "acked": acked,
                              "allocations": assignments,
                              "controller_credential_sha256":
                                  controller_credential_hash(request)})


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
    app.router.add_post("/v1/agent/sync", sync)



