"""The agents' side door: one long-polled sync call that is heartbeat, report and orders.

Only the leader answers it. Every answer carries the leader's Raft term; an agent obeys
only the highest term it has seen, so a deposed leader that still believes in itself
cannot countermand the new one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .errors import ApiError

if TYPE_CHECKING:
    from hacontrol.server import Controller

MAX_WAIT_S = 2.0


def _not_leader(ctl: Controller) -> ApiError:
    st = ctl.status()
    return ApiError("not_leader", "this replica is not the leader", leader=st["leader"],
                    leader_api=st["leader_api"])


async def sync(request: web.Request) -> web.Response:
    from .app import json_body  # late: app imports this module

    ctl: Controller = request.app["ctl"]
    if not ctl.is_leader():
        raise _not_leader(ctl)
    body = await json_body(request)
    node = body.get("node")
    if not isinstance(node, dict) or not isinstance(node.get("name"), str):
        raise ApiError("invalid", "node must be an object with a name", "node")
    name = node["name"]
    reports = body.get("reports") or []
    if not isinstance(reports, list):
        raise ApiError("invalid", "must be a list", "reports")
    wait_s = min(float(body.get("wait_s") or 0.0), MAX_WAIT_S)
    ctl.record_heartbeat(name)

    def registered_as_is(m: StateMachine) -> bool:
        n = m.nodes.get(name)
        return (n is not None and n.status == "ready" and n.address == node.get("address", "")
                and abs(n.capacity.cpu - float(node.get("cpu") or 0)) < 1e-9
                and n.capacity.memory_mb == node.get("memory_mb")
                and n.labels == (node.get("labels") or {})
                and n.attributes == (node.get("attributes") or {}))

    if not ctl.replica.read(registered_as_is):
        await ctl.write(C.NODE_REGISTER, {"name": name, "cpu": node.get("cpu"),
                                          "memory_mb": node.get("memory_mb"),
                                          "address": node.get("address", ""),
                                          "labels": node.get("labels") or {},
                                          "attributes": node.get("attributes") or {}})
    metrics = body.get("metrics")
    if isinstance(metrics, dict):
        ctl.alloc_metrics.update({k: v for k, v in metrics.items() if isinstance(v, dict)})
    if isinstance(body.get("agent"), dict):
        ctl.node_info[name] = body["agent"]
    acked = 0
    if reports:
        await ctl.write(C.ALLOC_UPDATE, {"node": name, "updates": reports})
        acked = len(reports)
    elif wait_s > 0:
        # Long poll: answer as soon as something changes for this node (its fingerprint
        # differs from the one the agent last got), or at the deadline. Waking on every
        # applied entry would answer every agent for every write anywhere.
        seen = body.get("fingerprint")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while ctl.replica.read(lambda m: node_fingerprint(m, name)) == seen:
            remaining = deadline - loop.time()
            if remaining <= 0 or not ctl.is_leader():
                break
            await ctl.wait_changed(remaining)

    if not ctl.is_leader():
        raise _not_leader(ctl)
    term = ctl.term()
    index, fp, assignments = ctl.replica.read(
        lambda m: (m.index, node_fingerprint(m, name), m.node_assignments(name)))
    return web.json_response({"term": term, "leader": ctl.me.id, "index": index,
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



