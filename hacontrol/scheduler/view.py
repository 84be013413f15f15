"""The scheduler's view of the state: plain placement inputs built from the machine."""

from __future__ import annotations

from hacontrol.model.records import Allocation
from hacontrol.model.states import DesiredState, Scoring
from hacontrol.state.machine import StateMachine

from .constraints import Constraint
from .placement import BATCH, BINPACK, SERVICE, SPREAD, Demand, JobType, NodeRoom, Placed

_NO_PORTS: frozenset[int] = frozenset()


def _job_type(name: str) -> JobType:
    return BATCH if name == BATCH else SERVICE


def placement_inputs(m: StateMachine, pending: list[Allocation]
                     ) -> tuple[list[Demand], list[NodeRoom]]:
    demands = []
    for a in pending:
        job = m.jobs.get((a.namespace, a.job))
        if job is None:
            continue
        spec = job.spec
        demands.append(Demand(
            alloc_id=a.id, namespace=a.namespace, job=a.job, cpu=a.resources.cpu,
            memory_mb=a.resources.memory_mb, priority=spec.priority, job_type=_job_type(spec.type),
            constraints=tuple(Constraint(c.attribute or "", c.operator, c.value or "")
                              for c in spec.constraints or ()),
            scoring=SPREAD if spec.scoring == Scoring.SPREAD else BINPACK,
            preempt=bool(spec.preempt),
            # Job anti-affinity unless the spec opts out (or spreads by its own rule).
            job_count=0 if spec.spread is False else spec.count,
            ports=frozenset((a.ports or {}).values())))
    # Placement looks at what runs on a node only to count the demands' own jobs there
    # (spread, distinct_nodes) and to find batch work to preempt: building a record of
    # every other allocation cost a walk over 100,000 of them per plan, and so did finding
    # the demands' jobs among them; the store's index by job gives those alone.
    wanted_jobs = {(d.namespace, d.job) for d in demands}
    preempting = any(d.preempt for d in demands)
    looked_at = set(wanted_jobs)
    if preempting:
        looked_at |= {key for key, job in m.jobs.items() if job.spec.type == BATCH}
    by_node: dict[str, list[Placed]] = {}
    for key in sorted(looked_at):
        job = m.jobs.get(key)
        if job is None:
            continue
        priority, job_type = job.spec.priority, _job_type(job.spec.type)
        for a in m.job_allocs(job):
            if a.node is None or not a.holds_resources or a.desired != DesiredState.RUN:
                # Instances on their way out still hold room (node_free counts them) but
                # must not be offered as preemption victims again.
                continue
            by_node.setdefault(a.node, []).append(Placed(
                alloc_id=a.id, namespace=a.namespace, job=a.job, cpu=a.resources.cpu,
                memory_mb=a.resources.memory_mb, priority=priority, job_type=job_type))
    ports_used: dict[str, set[int]] = {}
    if any(d.ports for d in demands):
        for a in m.allocs.values():
            if a.ports and a.node is not None and a.holds_resources:
                # Until it has stopped, an allocation on its way out still holds its ports.
                ports_used.setdefault(a.node, set()).update(a.ports.values())
    rooms = []
    # A node record's labels and attributes are replaced on update, never changed in place
    # (`state/handlers/nodes.py`), so the plan, made outside the apply lock, shares them.
    for n in m.nodes.values():
        cpu, mem = m.node_free(n)
        placed = by_node.get(n.name)
        ports = ports_used.get(n.name)
        rooms.append(NodeRoom(
            n.name, n.capacity.cpu, n.capacity.memory_mb, cpu, mem, n.labels, n.attributes,
            n.eligible, tuple(placed) if placed else (),
            frozenset(ports) if ports else _NO_PORTS))
    return demands, rooms
