"""Keeping the service registry in step with the tables, inside `apply`.

Handlers mark what they changed: an allocation's state, health, ports or node, or its
removal (`Store.touch_alloc`, also for every allocation of a node whose status or address
changed), or a job's spec or status (`Store.touch_job`). After the entry is applied,
`refresh` derives what each marked job declares and each marked allocation serves
(`_Lookups.offer`, the one definition of an endpoint), and the registry moves a service's
index only when its endpoint set changed. Every replica does the same at the same entry,
so the registry is as deterministic as the tables it is derived from (a test compares it
with a derivation from scratch, `rebuild`, after random histories).

An allocation is an endpoint of a service its version declares when it is wanted
(`desired: run`), running, on a ready node with an address, healthy by the job's health
check (or simply running when the job has none), and its node has reported the port.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.spec import JobSpec
from hacontrol.model.states import AllocState, DesiredState, Health, JobStatus, NodeStatus

from .registry import Endpoint, Registry, ServiceKey
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


def declares(job: Job) -> bool:
    """Whether any version of `job` still kept declares a service (cheap: at most
    `VERSIONS_KEPT` specs)."""
    return bool(job.spec.services) or any(v.spec.services for v in job.history)


class _Lookups:
    """What one refresh looks up again and again: versions' specs, nodes' hosts."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.specs: dict[tuple[str, str, int], JobSpec] = {}
        self.hosts: dict[str, str] = {}
        self.declaring: dict[tuple[str, str], bool] = {}

    def declares(self, job: Job) -> bool:
        found = self.declaring.get(job.key)
        if found is None:
            found = self.declaring[job.key] = declares(job)
        return found

    def spec(self, job: Job, version: int) -> JobSpec:
        key = (job.namespace, job.name, version)
        spec = self.specs.get(key)
        if spec is None:
            spec = next((v.spec for v in job.history if v.version == version), job.spec)
            if version == job.version:
                spec = job.spec
            self.specs[key] = spec
        return spec

    def host(self, node: Node) -> str:
        host = self.hosts.get(node.name)
        if host is None:
            host = self.hosts[node.name] = node_host(node)
        return host

    def offer(self, job: Job, alloc: Allocation) -> dict[str, Endpoint]:
        """What `alloc` serves now: an endpoint in each service its version declares."""
        if job.status != JobStatus.RUNNING or not alloc.ports:
            return {}
        spec = self.spec(job, alloc.version)
        if not spec.services:
            return {}
        node = _serving(self.store, alloc, spec)
        host = self.host(node) if node is not None else ""
        if node is None or not host:
            return {}
        out: dict[str, Endpoint] = {}
        for s in spec.services:
            port = alloc.ports.get(s.port)
            if port is not None:
                out[s.name] = Endpoint(alloc.id, node.name, host, port)
        return out


def declared_by(job: Job | None) -> frozenset[str]:
    """The services a running job declares (its current version's)."""
    if job is None or job.status != JobStatus.RUNNING:
        return frozenset()
    return frozenset(s.name for s in job.spec.services or ())


def refresh(store: Store, index: int) -> list[ServiceKey]:
    """Derive again what the marked jobs declare and the marked allocations serve (in key
    order, so every replica changes the registry identically); returns the services that
    changed at `index`."""
    jobs, allocs = store.dirty_jobs, store.dirty_allocs
    if not jobs and not allocs:
        return []
    store.dirty_jobs, store.dirty_allocs = set(), set()
    reg = store.registry
    look = _Lookups(store)
    for key in sorted(jobs):
        job = store.jobs.get(key)
        reg.declare(key, declared_by(job))
        if job is not None and look.declares(job):
            for member in store.job_allocs(job):
                reg.serve(member.id, key, look.offer(job, member))
        for alloc_id in list(reg.by_job.get(key, ())):
            if job is None or alloc_id not in store.allocs or not look.declares(job):
                reg.serve(alloc_id, key, {})
    for alloc_id in sorted(allocs):
        alloc = store.allocs.get(alloc_id)
        if alloc is None:  # forgotten
            held = reg.serving.get(alloc_id)
            if held is not None:
                reg.serve(alloc_id, held[0], {})
            continue
        key = (alloc.namespace, alloc.job)
        if key in jobs:
            continue  # done with its job
        job = store.jobs.get(key)
        if job is not None and look.declares(job):
            reg.serve(alloc_id, key, look.offer(job, alloc))
        elif alloc_id in reg.serving:
            reg.serve(alloc_id, key, {})
    return reg.commit(index)


def rebuild(store: Store, index: int) -> Registry:
    """A registry derived from scratch from every job (after a restore or a snapshot
    install), with every service's index `index`; `store` keeps its own."""
    kept = store.registry
    store.registry = Registry()
    store.dirty_jobs, store.dirty_allocs = set(store.jobs), set()
    try:
        refresh(store, index)
        return store.registry
    finally:
        store.registry = kept


def touch_node(store: Store, node: str) -> None:
    """Mark the allocations on `node` (its status or address changed)."""
    for alloc in store.node_allocs(node):
        store.touch_alloc(alloc.id)
