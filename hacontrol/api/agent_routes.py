"""The agents' side door: one long-polled sync call that is heartbeat, report and orders.

Only the leader answers it. Every answer carries the leader's Raft term; an agent obeys
only the highest term it has seen, so a deposed leader that still believes in itself
cannot countermand the new one.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from hacontrol.controller.errors import NotLeader
from hacontrol.model.errors import invalid
from hacontrol.scheduler.leader_state import LeaderState
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .backend import Cluster
from .request import cluster_of, json_body, leader_of, store_of

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


async def sync(request: web.Request) -> web.Response:
    cluster, store = cluster_of(request), store_of(request)
    leader = _leading(request)
    body = await json_body(request)
    node = body.get("node")
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        raise invalid("node", "node must be an object with a name")
    name = node["name"]
    reports = body.get("reports") or []
    if not isinstance(reports, list):
        raise invalid("reports", "must be a list")
    wait_s = min(float(body.get("wait_s") or 0.0), MAX_WAIT_S)
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
        leader.alloc_metrics.update({k: v for k, v in metrics.items() if isinstance(v, dict)})
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
                              "allocations": assignments})


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



