"""A fixed history touching every command and every spec section.

Its snapshot, digest and API views are recorded in `data/state_golden.json` (made by the
code before the model was typed); replaying it must give the same bytes, so the snapshot
encoding, the state digest and the API answers cannot drift unnoticed.
"""

from __future__ import annotations

from typing import Any

from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

FULL_SPEC: dict[str, Any] = {
    "command": ["/bin/sh", "-c", "exec sleep 100"], "env": {"B": "2", "A": "1"},
    "cwd": "/tmp", "count": 2, "resources": {"cpu": 0.25, "memory_mb": 32, "pids": 50},
    "restart": {"policy": "always", "max_restarts": 3}, "stop": {"signal": "sigint"},
    "user": "nobody", "group": "nogroup", "umask": "027",
    "health": {"type": "http", "port": 8080, "path": "/ready"},
    "logs": {"keep": 1}, "sockets": [{"name": "http", "port": 8080}],
    "priority": 70, "scoring": "spread",
    "constraints": [{"attribute": "label.zone", "operator": "in", "value": ["a", "b"]},
                    {"operator": "distinct_nodes"},
                    {"attribute": "attr.os", "value": "linux"}],
    "preempt": True, "depends_on": ["setup", "db"],
    "update": {"max_parallel": 2, "auto_revert": True},
    "scaling": {"min": 1, "max": 4}, "disconnect": {"stop_after_s": 30},
}
SPECS: list[dict[str, Any]] = [
    {"command": ["sleep", "100"]},
    {"command": ["true"], "type": "batch", "health": {"type": "exec", "command": ["true"]}},
    {"command": ["echo hi"], "shell": True, "health": {"type": "tcp", "port": 1},
     "constraints": [], "sockets": [], "depends_on": []},
    FULL_SPEC,
]


def run(record: list[tuple[str, dict[str, Any]]] | None = None) -> StateMachine:
    """Apply the history; `record` collects the (op, args) of every command."""
    m = StateMachine()
    index = 0
    ts = 1000.0

    def do(op: str, idem: str | None = None, **args: Any) -> dict[str, Any]:
        nonlocal index, ts
        index += 1
        ts += 1.5
        if record is not None:
            record.append((op, args))
        return m.apply(C.Command(op, ts, args, idem).encode(), index)

    do(C.NS_PUT, name="team", quota={"cpu": 8, "memory_mb": 4096})
    for n, zone in (("n1", "a"), ("n2", "b"), ("n3", "a")):
        do(C.NODE_REGISTER, name=n, cpu=4, memory_mb=2048, address=f"http://{n}",
           labels={"zone": zone}, attributes={"os": "linux"})
    do(C.JOB_PUT, namespace="team", name="setup", spec=SPECS[1])
    do(C.JOB_PUT, namespace="team", name="db", spec=SPECS[0], idem="k1")
    do(C.JOB_PUT, namespace="team", name="db", spec=SPECS[0], idem="k1")
    do(C.JOB_PUT, namespace="team", name="web", spec=FULL_SPEC)
    do(C.JOB_PUT, namespace="default", name="sh", spec=SPECS[2])
    for step in range(2):
        pending = sorted(a.id for a in m.pending_allocs())
        nodes = ["n1", "n2", "n3"]
        do(C.PLAN, placements=[[a, nodes[i % 3]] for i, a in enumerate(pending)])
        updates = [{"id": a.id, "state": "running", "pid": 100 + i, "restarts": 0,
                    "health": "healthy" if step else "starting"}
                   for i, a in enumerate(sorted(m.allocs.values(), key=lambda a: a.id))
                   if a.node == "n1" and not a.terminal]
        do(C.ALLOC_UPDATE, node="n1", updates=updates)
    setup = [a for a in m.allocs.values() if a.job == "setup" and a.node]
    for a in setup:
        do(C.ALLOC_UPDATE, node=a.node, updates=[{"id": a.id, "state": "exited",
                                                  "exit_code": 0, "reason": "exit"}])
    do(C.JOB_PUT, namespace="team", name="web",
       spec={**FULL_SPEC, "env": {"A": "changed"}})
    web = m.jobs[("team", "web")]
    do(C.DEPLOY_STEP, namespace="team", name="web", version=web.version, start=1, stop=[])
    do(C.JOB_SCALE, namespace="team", name="web", count=3, source="autoscale", reason="cpu")
    do(C.DEPLOY_STEP, namespace="team", name="web", version=web.version, start=0, stop=[],
       status="failed", message="deadline")
    do(C.JOB_REVERT, namespace="team", name="web", version=1)
    do(C.NODE_DRAIN, name="n2", enable=True, deadline_s=30)
    do(C.MIGRATE, allocations=sorted(a.id for a in m.node_allocs("n2")), reason="drain")
    do(C.NODE_STATUS, name="n3", status="down")
    pending = sorted(a.id for a in m.pending_allocs())
    do(C.PLAN, placements=[[a, "n1"] for a in pending],
       evictions=[[a.id, "preempted"] for a in m.node_allocs("n1")
                  if a.job == "db"][:1])
    do(C.JOB_DELETE, namespace="default", name="sh")
    do(C.JOB_PUT, namespace="team", name="bad", spec={"command": []})
    do(C.NOOP)
    return m


def views(m: StateMachine) -> dict[str, Any]:
    """Every answer the API builds from the state machine."""
    return {
        "jobs": [m.job_view(j) for j in m.jobs.values()],
        "nodes": [m.node_view(n) for n in m.nodes.values()],
        "allocs": [m.alloc_view(a) for a in m.allocs.values()],
        "namespaces": [m.namespace_view(n) for n in m.namespaces],
        "assignments": {n: m.node_assignments(n) for n in m.nodes},
        "versions": {f"{j.namespace}/{j.name}": j.versions for j in m.jobs.values()},
        "events": list(m.events),
    }
