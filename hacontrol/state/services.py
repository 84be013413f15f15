"""Keeping the service registry in step with the tables, inside `apply`.

Handlers mark the jobs whose allocations, spec or nodes they changed (`Store.touch_job`);
after the entry is applied, `refresh` derives each marked job's offer again from its
allocations and their nodes, and the registry moves a service's index only when its
endpoint set changed. Every replica does the same at the same entry, so the registry is as
deterministic as the tables it is derived from, and `offered_by` is the one definition of
what an endpoint is (a test compares the registry with a derivation from scratch).

An allocation is an endpoint of a service its version declares when it is wanted
(`desired: run`), running, on a ready node with an address, healthy by the job's health
check (or simply running when the job has none), and its node has reported the port.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.spec import JobSpec
from hacontrol.model.states import AllocState, DesiredState, Health, JobStatus, NodeStatus

from .registry import Endpoint, Offer, Registry, ServiceKey
from .store import Store


def node_host(node: Node) -> str:
    """The host part of a node's advertised address (`http(s)://host:port`), or ''."""
    try:
        return urlsplit(node.address).hostname or ""
    except ValueError:
        return ""


def _serving(store: Store, alloc: Allocation, spec: JobSpec) -> Node | None:
    if alloc.desired != DesiredState.RUN or alloc.state != AllocState.RUNNING:
        return None
    if spec.health is not None and alloc.health != Health.HEALTHY:
        return None
    node = store.nodes.get(alloc.node or "")
    if node is None or node.status != NodeStatus.READY:
        return None
    return node


def offered_by(store: Store, job: Job | None) -> Offer:
    """What `job` offers now: each service its allocations' versions declare, with the
    endpoints of those that serve it (a running job declares its current services even
    while none of them is healthy)."""
    if job is None or job.status != JobStatus.RUNNING:
        return {}
    offer: dict[str, list[Endpoint]] = {s.name: [] for s in job.spec.services or ()}
    specs = {v.version: v.spec for v in job.history}
    specs[job.version] = job.spec
    for alloc in store.job_allocs(job):
        spec = specs.get(alloc.version, job.spec)
        if not spec.services or not alloc.ports:
            continue
        node = _serving(store, alloc, spec)
        host = node_host(node) if node is not None else ""
        if node is None or not host:
            continue
        for s in spec.services:
            port = alloc.ports.get(s.port)
            if port is not None:
                offer.setdefault(s.name, []).append(Endpoint(alloc.id, node.name, host, port))
    return {name: tuple(sorted(eps)) for name, eps in offer.items()}


def _declares(job: Job) -> bool:
    """Whether any version of `job` still kept declares a service (cheap: at most
    `VERSIONS_KEPT` specs)."""
    return bool(job.spec.services) or any(v.spec.services for v in job.history)


def refresh(store: Store, index: int) -> list[ServiceKey]:
    """Derive the offers of the jobs marked since the last refresh (in key order, so every
    replica changes the registry identically); returns the services that changed."""
    if not store.dirty_jobs:
        return []
    dirty = sorted(store.dirty_jobs)
    store.dirty_jobs = set()
    changed: list[ServiceKey] = []
    for key in dirty:
        job = store.jobs.get(key)
        if key not in store.registry.offers and (job is None or not _declares(job)):
            continue
        changed.extend(store.registry.offer(key, offered_by(store, job), index))
    return changed


def rebuild(store: Store, index: int) -> Registry:
    """A registry derived from scratch from every job (after a restore or a snapshot
    install), with every service's index `index`."""
    registry = Registry()
    for key in sorted(store.jobs):
        job = store.jobs[key]
        if _declares(job):
            registry.offer(key, offered_by(store, job), index)
    store.dirty_jobs = set()
    return registry


def touch_node(store: Store, node: str) -> None:
    """Mark the jobs with allocations on `node` (its status or address changed)."""
    for alloc in store.node_allocs(node):
        store.touch_job((alloc.namespace, alloc.job))
