"""node_register, node_status, node_drain: the nodes and their liveness."""

from __future__ import annotations

from typing import Any

from hacontrol.model.errors import not_found
from hacontrol.model.records import Job, Node
from hacontrol.model.states import AllocState, JobStatus, NodeStatus

from .. import views
from ..context import Applying, Result
from ..lifecycle import collect_job, reconcile
from ..services import touch_node
from ..validate import node_name, parse_drain, parse_node_registration, parse_node_status
from .acl import intro_used


def register(tx: Applying, args: dict[str, Any]) -> Result:
    reg = parse_node_registration(args)
    intro_used(tx)
    node = tx.store.nodes.get(reg.name)
    if node is None:
        node = Node(reg.name, reg.capacity, reg.address, NodeStatus.READY, tx.ts, tx.ts,
                    tx.index, reg.labels, reg.attributes)
        tx.store.nodes[reg.name] = node
        tx.event("node_registered", node=reg.name)
    else:
        if node.status != NodeStatus.READY:
            tx.event("node_ready", node=reg.name)
        if node.status != NodeStatus.READY or node.address != reg.address:
            touch_node(tx.store, node.name)  # its endpoints' address or liveness
        node.capacity = reg.capacity
        node.address = reg.address
        node.status = NodeStatus.READY
        node.labels, node.attributes = reg.labels, reg.attributes
        node.updated_at = tx.ts
        node.modify_index = tx.index
    return {"node": views.node_view(tx.store, node)}


def _node(tx: Applying, args: dict[str, Any]) -> Node:
    name = node_name(args)
    node = None if name is None else tx.store.nodes.get(name)
    if node is None:
        raise not_found(f"node {args.get('name')!r}", "name")
    return node


def drain(tx: Applying, args: dict[str, Any]) -> Result:
    node = _node(tx, args)
    enable, deadline = parse_drain(args)
    node.drain = enable
    node.drain_deadline = tx.ts + float(deadline) if enable else None
    node.updated_at = tx.ts
    node.modify_index = tx.index
    tx.event("node_drain", node=node.name, enable=enable,
             deadline_s=deadline if enable else None)
    return {"node": views.node_view(tx.store, node)}


def status(tx: Applying, args: dict[str, Any]) -> Result:
    node = _node(tx, args)
    new = parse_node_status(args)
    if node.status == new:
        return {"node": views.node_view(tx.store, node), "changed": False}
    node.status = new
    node.updated_at = tx.ts
    node.modify_index = tx.index
    tx.event("node_" + new, node=node.name)
    touch_node(tx.store, node.name)
    if new == NodeStatus.DOWN:
        touched: dict[tuple[str, str], Job] = {}
        for alloc in tx.store.node_allocs(node.name):
            if not alloc.terminal:
                tx.store.set_state(alloc, AllocState.LOST)
                alloc.message = f"node {node.name} down"
                alloc.updated_at = tx.ts
                alloc.modify_index = tx.index
                job = tx.store.jobs.get((alloc.namespace, alloc.job))
                if job is not None:
                    touched[job.key] = job
        for job in touched.values():
            if job.status == JobStatus.RUNNING:
                reconcile(tx, job)
            else:
                collect_job(tx, job)
    return {"node": views.node_view(tx.store, node), "changed": True}
