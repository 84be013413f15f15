"""The replicated state machine.

`apply(command_bytes, index)` is a pure function of the current state and the command: no
clock, no randomness, no I/O, and it never raises. Every handler checks everything first and
mutates only once the whole command is known to succeed, so a rejected command leaves no
trace except in the idempotency table.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import msgpack

from hacontrol.model.records import Deployment, JobVersion
from hacontrol.model.states import AllocState, DeploymentStatus

from . import commands as C
from .errors import Rejection, conflict, invalid, not_found
from .model import (
    COMPLETE,
    DESIRED_RUN,
    DESIRED_STOP,
    FAILED,
    JOB_RUNNING,
    JOB_STOPPING,
    LOST,
    NODE_DOWN,
    NODE_READY,
    PAUSED,
    PENDING,
    RUNNING,
    STARTING,
    STOPPED,
    Allocation,
    Job,
    JobSpec,
    Node,
    Quota,
    Resources,
    Usage,
)
from .quota import check_fits, headroom
from .validate import check_name, parse_count, parse_job_spec, parse_quota

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "default"
IDEMPOTENCY_KEYS_KEPT = 10_000
TERMINAL_ALLOCS_KEPT_PER_JOB = 20
SNAPSHOT_VERSION = 1
REPORTED_STATES = frozenset({STARTING, RUNNING, PAUSED, "exited", FAILED, STOPPED})
HEALTH_STATES = frozenset({"healthy", "unhealthy", "starting"})
VERSIONS_KEPT = 10
EVENTS_KEPT = 5000
MAX_LABELS = 64

Result = dict[str, Any]


def _digest(op: str, args: dict[str, Any]) -> str:
    return hashlib.sha256(msgpack.packb([op, args], use_bin_type=True)).hexdigest()[:32]


class StateMachine:
    def __init__(self) -> None:
        self.namespaces: dict[str, Quota] = {DEFAULT_NAMESPACE: Quota()}
        self.jobs: dict[tuple[str, str], Job] = {}
        self.allocs: dict[str, Allocation] = {}
        self.nodes: dict[str, Node] = {}
        # key -> (request digest, result); FIFO-evicted so every replica forgets the same keys.
        self.idempotency: OrderedDict[str, tuple[str, Result]] = OrderedDict()
        self.alloc_seq = 0
        self.index = 0
        self.broken: str | None = None
        # Derived index: node -> ids of the allocations placed there (insertion-ordered).
        self.on_node: dict[str, dict[str, None]] = {}
        # Derived, never snapshotted: the sum of job usages per namespace, kept current so a
        # quota check costs O(1) rather than a walk over every job of the namespace.
        # Integers (micro-cores) so that the running sum and a recomputation after restore
        # agree to the last bit: float sums depend on their order.
        self.usage: dict[str, tuple[int, int, int]] = {}
        # Called after every applied entry (on the applying thread); never part of the state.
        self.on_applied: Callable[[int, C.Command | None], None] | None = None
        # Recent events, derived deterministically from applied entries. Not part of
        # snapshots: a replica restored from one starts its event buffer afresh.
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        # Test-only planted fault (see hacontrol/planted.py); None in every real deployment.
        self.planted_quota_skip: Callable[[], bool] | None = None

    # ------------------------------------------------------------------ apply

    def apply(self, raw: bytes, index: int) -> Result:
        self.index = max(self.index, index)
        cmd: C.Command | None = None
        try:
            cmd = C.decode(raw)
            result = self._apply_command(cmd, index)
        except Rejection as rej:
            result = {"ok": False, "error": rej.to_dict(), "index": index}
        except Exception as exc:  # a bug must not wedge the replica: report, never raise
            # The handler may have mutated part of the state before failing: this replica
            # can no longer be trusted to agree with the others. Fail-stop (readiness goes
            # 503) rather than serve a state that may have silently diverged.
            log.critical("internal error applying entry %d: replica marked broken", index,
                         exc_info=True)
            self.broken = f"internal error applying entry {index}: {type(exc).__name__}"
            result = {"ok": False, "index": index,
                      "error": {"code": "internal", "message": f"{type(exc).__name__}: {exc}",
                                "field": None}}
        if self.on_applied is not None:
            try:
                self.on_applied(index, cmd)
            except Exception:
                log.exception("on_applied hook failed")
        return result

    def _apply_command(self, cmd: C.Command, index: int) -> Result:
        digest = ""
        if cmd.idem is not None:
            digest = _digest(cmd.op, cmd.args)
            seen = self.idempotency.get(cmd.idem)
            if seen is not None:
                if seen[0] != digest:
                    raise conflict("idempotency key was already used for a different request",
                                   "Idempotency-Key")
                return dict(seen[1], replayed=True)
        handler = _HANDLERS[cmd.op]
        self._ts = cmd.ts
        try:
            data = handler(self, cmd, index)
            result: Result = {"ok": True, "index": index, **data}
        except Rejection as rej:
            result = {"ok": False, "error": rej.to_dict(), "index": index}
            if rej.code == "quota_exceeded":
                self._event(index, "quota_rejected", op=cmd.op,
                            namespace=cmd.args.get("namespace", cmd.args.get("name")),
                            job=cmd.args.get("name"), message=rej.message)
        if cmd.idem is not None:
            self.idempotency[cmd.idem] = (digest, result)
            while len(self.idempotency) > IDEMPOTENCY_KEYS_KEPT:
                self.idempotency.popitem(last=False)
        return result

    # --------------------------------------------------------------- handlers

    def _noop(self, cmd: C.Command, index: int) -> Result:
        return {}

    def _ns_put(self, cmd: C.Command, index: int) -> Result:
        name = check_name(cmd.args.get("name"), "namespace")
        quota = parse_quota(cmd.args.get("quota"))
        rej = check_fits(quota, self.namespace_usage(name))
        if rej is not None:
            raise Rejection(rej.code, "the namespace already uses more than this quota: "
                            + rej.message, "quota." + (rej.field or "").split(".")[-1])
        self.namespaces[name] = quota
        return {"namespace": self.namespace_view(name)}

    def _job_put(self, cmd: C.Command, index: int) -> Result:
        ns, name = self._job_key(cmd.args)
        if ns not in self.namespaces:
            raise not_found(f"namespace {ns!r}", "namespace")
        spec = parse_job_spec(cmd.args.get("spec"))
        return self._register(ns, name, spec, cmd, index, reverted_from=None)

    def _register(self, ns: str, name: str, spec: JobSpec, cmd: C.Command, index: int,
                  reverted_from: int | None) -> Result:
        job = self.jobs.get((ns, name))
        if job is not None and job.status == JOB_RUNNING and job.spec == spec:
            return {"job": self.job_view(job), "changed": False}
        self._check_cycle(ns, name, spec.depends_on or ())
        old_usage = job.quota_usage() if job is not None else Usage()
        self._check_quota(ns, self.namespace_usage(ns) - old_usage + spec.usage())
        new_version = True
        if job is None:
            job = Job(ns, name, spec, 1, JOB_RUNNING, cmd.ts, cmd.ts, index)
            self.jobs[job.key] = job
            self._account(ns, old_usage, job.quota_usage())
        else:
            was = job.quota_usage()
            new_version = job.status == JOB_STOPPING or not job.spec.same_template(spec)
            rolling = (new_version and job.status == JOB_RUNNING and spec.type == "service"
                       and any(a.desired == DESIRED_RUN and a.state in (RUNNING, PAUSED)
                               for a in self.job_allocs(job)))
            job.spec = spec
            job.status = JOB_RUNNING
            job.updated_at = cmd.ts
            job.modify_index = index
            if new_version:
                job.version += 1
                job.rollout = None
                if rolling:
                    job.rollout = Deployment(
                        job.version, DeploymentStatus.RUNNING, cmd.ts,
                        cmd.ts + spec.update_policy.deadline_s, job.version - 1, reverted_from)
            self._account(ns, was, job.quota_usage())
        if new_version:
            job.history.append(JobVersion(job.version, spec, cmd.ts, job.rollout is None))
            del job.history[:-VERSIONS_KEPT]
        self._event(index, "job_registered" if job.version == 1 and new_version else
                    "job_updated", namespace=ns, job=name, version=job.version,
                    count=spec.count, rolling=job.rollout is not None,
                    reverted_from=reverted_from)
        self._reconcile(job, cmd.ts, index)
        return {"job": self.job_view(job), "changed": True}

    def _job_revert(self, cmd: C.Command, index: int) -> Result:
        ns, name = self._job_key(cmd.args)
        job = self.jobs.get((ns, name))
        if job is None:
            raise not_found(f"job {ns}/{name}", "name")
        version = cmd.args.get("version")
        target = next((v for v in job.history if v.version == version), None)
        if target is None:
            raise not_found(f"version {version!r} of job {ns}/{name}", "version")
        spec = target.spec.with_count(job.spec.count)
        return self._register(ns, name, spec, cmd, index, reverted_from=job.version)

    def _check_cycle(self, ns: str, name: str, deps: tuple[str, ...]) -> None:
        graph = {j.name: list(j.spec.depends_on or ())
                 for j in self.jobs.values() if j.namespace == ns}
        graph[name] = list(deps)
        # Depth-first walk from the new job: reaching it again is a cycle.
        stack, seen = list(deps), set()
        while stack:
            cur = stack.pop()
            if cur == name:
                raise invalid("depends_on", f"dependency cycle through job {name!r}")
            if cur in seen:
                continue
            seen.add(cur)
            stack.extend(graph.get(cur, []))

    def _job_scale(self, cmd: C.Command, index: int) -> Result:
        ns, name = self._job_key(cmd.args)
        job = self.jobs.get((ns, name))
        if job is None or job.status != JOB_RUNNING:
            raise not_found(f"job {ns}/{name}", "name")
        count = parse_count(cmd.args.get("count"))
        if count == job.spec.count:
            return {"job": self.job_view(job), "changed": False}
        new_spec = job.spec.with_count(count)
        self._check_quota(ns, self.namespace_usage(ns) - job.quota_usage() + new_spec.usage())
        self._account(ns, job.quota_usage(), new_spec.usage())
        job.spec = new_spec
        job.updated_at = cmd.ts
        job.modify_index = index
        self._event(index, "job_scaled", namespace=ns, job=name, count=count,
                    source=cmd.args.get("source", "api"), reason=cmd.args.get("reason"))
        self._reconcile(job, cmd.ts, index)
        return {"job": self.job_view(job), "changed": True}

    def _job_delete(self, cmd: C.Command, index: int) -> Result:
        ns, name = self._job_key(cmd.args)
        job = self.jobs.get((ns, name))
        if job is None:
            raise not_found(f"job {ns}/{name}", "name")
        self._account(ns, job.quota_usage(), Usage())
        job.status = JOB_STOPPING
        job.updated_at = cmd.ts
        job.modify_index = index
        job.rollout = None
        for alloc in self.job_allocs(job):
            self._stop_alloc(alloc, cmd.ts, index, "job stopped")
        self._event(index, "job_stopped", namespace=ns, job=name)
        view = self.job_view(job)
        self._collect_job(job)
        return {"job": view}

    def _node_register(self, cmd: C.Command, index: int) -> Result:
        a = cmd.args
        name = check_name(a.get("name"), "name")
        cpu = a.get("cpu")
        mem = a.get("memory_mb")
        address = a.get("address", "")
        if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0 < cpu <= 100_000:
            raise invalid("cpu", "must be a positive number")
        if isinstance(mem, bool) or not isinstance(mem, int) or not 0 < mem <= 2**40:
            raise invalid("memory_mb", "must be a positive integer")
        if not isinstance(address, str) or len(address) > 500:
            raise invalid("address", "must be a string")
        labels = _str_map(a.get("labels"), "labels")
        attributes = _str_map(a.get("attributes"), "attributes")
        node = self.nodes.get(name)
        if node is None:
            node = Node(name, Resources(float(cpu), mem), address, NODE_READY, cmd.ts, cmd.ts,
                        index, labels, attributes)
            self.nodes[name] = node
            self._event(index, "node_registered", node=name)
        else:
            if node.status != NODE_READY:
                self._event(index, "node_ready", node=name)
            node.capacity = Resources(float(cpu), mem)
            node.address = address
            node.status = NODE_READY
            node.labels, node.attributes = labels, attributes
            node.updated_at = cmd.ts
            node.modify_index = index
        return {"node": self.node_view(node)}

    def _node_drain(self, cmd: C.Command, index: int) -> Result:
        name = cmd.args.get("name")
        node = self.nodes.get(name) if isinstance(name, str) else None
        if node is None:
            raise not_found(f"node {name!r}", "name")
        enable = cmd.args.get("enable")
        if not isinstance(enable, bool):
            raise invalid("enable", "must be true or false")
        deadline = cmd.args.get("deadline_s", 60.0)
        if isinstance(deadline, bool) or not isinstance(deadline, int | float) \
                or not 0 <= deadline <= 86400 * 7:
            raise invalid("deadline_s", "must be a number of seconds")
        node.drain = enable
        node.drain_deadline = cmd.ts + float(deadline) if enable else None
        node.updated_at = cmd.ts
        node.modify_index = index
        self._event(index, "node_drain", node=name, enable=enable,
                    deadline_s=deadline if enable else None)
        return {"node": self.node_view(node)}

    def _migrate(self, cmd: C.Command, index: int) -> Result:
        ids = cmd.args.get("allocations")
        why = cmd.args.get("reason", "migrated")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise invalid("allocations", "must be a list of allocation ids")
        moved = []
        touched: dict[tuple[str, str], Job] = {}
        for alloc_id in ids:
            alloc = self.allocs.get(alloc_id)
            if alloc is None or alloc.desired != DESIRED_RUN or alloc.terminal:
                continue
            self._stop_alloc(alloc, cmd.ts, index, str(why)[:200])
            moved.append(alloc_id)
            job = self.jobs.get((alloc.namespace, alloc.job))
            if job is not None and job.status == JOB_RUNNING:
                touched[job.key] = job
        for job in touched.values():
            self._reconcile(job, cmd.ts, index)
        if moved:
            self._event(index, "allocs_migrated", allocations=moved, reason=why)
        return {"migrated": moved}

    def _deploy_step(self, cmd: C.Command, index: int) -> Result:
        ns, name = self._job_key(cmd.args)
        job = self.jobs.get((ns, name))
        dep = job.rollout if job is not None else None
        if job is None or dep is None or dep.version != cmd.args.get("version") \
                or dep.status != DeploymentStatus.RUNNING:
            raise conflict("no such running deployment", "version")
        start = cmd.args.get("start", 0)
        stop = cmd.args.get("stop", [])
        status = cmd.args.get("status")
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= 10_000:
            raise invalid("start", "must be a small non-negative integer")
        if not isinstance(stop, list) or not all(isinstance(i, str) for i in stop):
            raise invalid("stop", "must be a list of allocation ids")
        if status not in (None, "successful", "failed"):
            raise invalid("status", "must be successful or failed")
        new_live = [a for a in self.job_allocs(job) if a.version == job.version
                    and a.desired == DESIRED_RUN and not a.terminal]
        start = max(0, min(start, job.spec.count - len(new_live)))
        for _ in range(start):
            self._new_alloc(job, cmd.ts, index)
        for alloc_id in stop:
            alloc = self.allocs.get(alloc_id)
            if alloc is not None and alloc.job == name and alloc.namespace == ns \
                    and alloc.version != job.version:
                self._stop_alloc(alloc, cmd.ts, index, f"replaced by version {job.version}")
        if status is not None:
            dep.status = DeploymentStatus(status)
            if status == "successful":
                for v in job.history:
                    if v.version == job.version:
                        v.stable = True
                job.rollout = None
            self._event(index, "deployment", namespace=ns, job=name, version=job.version,
                        status=status, message=cmd.args.get("message"))
        return {"job": self.job_view(job)}

    def _node_status(self, cmd: C.Command, index: int) -> Result:
        name = cmd.args.get("name")
        status = cmd.args.get("status")
        node = self.nodes.get(name) if isinstance(name, str) else None
        if node is None:
            raise not_found(f"node {name!r}", "name")
        if status not in (NODE_READY, NODE_DOWN):
            raise invalid("status", "must be ready or down")
        if node.status == status:
            return {"node": self.node_view(node), "changed": False}
        node.status = status
        node.updated_at = cmd.ts
        node.modify_index = index
        self._event(index, "node_" + status, node=name)
        if status == NODE_DOWN:
            touched: dict[tuple[str, str], Job] = {}
            for alloc in self.node_allocs(name):
                if not alloc.terminal:
                    alloc.state = LOST
                    alloc.message = f"node {name} down"
                    alloc.updated_at = cmd.ts
                    alloc.modify_index = index
                    job = self.jobs.get((alloc.namespace, alloc.job))
                    if job is not None:
                        touched[job.key] = job
            for job in touched.values():
                if job.status == JOB_RUNNING:
                    self._reconcile(job, cmd.ts, index)
                else:
                    self._collect_job(job)
        return {"node": self.node_view(node), "changed": True}

    def _plan(self, cmd: C.Command, index: int) -> Result:
        placements = cmd.args.get("placements")
        if not isinstance(placements, list):
            raise invalid("placements", "must be a list")
        parsed: list[tuple[str, str]] = []
        for i, p in enumerate(placements):
            if (not isinstance(p, list) or len(p) != 2
                    or not all(isinstance(x, str) for x in p)):
                raise invalid(f"placements[{i}]", "must be [allocation id, node name]")
            parsed.append((p[0], p[1]))
        evictions = cmd.args.get("evictions") or []
        if not isinstance(evictions, list):
            raise invalid("evictions", "must be a list")
        for i, e in enumerate(evictions):
            if (not isinstance(e, list) or len(e) != 2
                    or not all(isinstance(x, str) for x in e)):
                raise invalid(f"evictions[{i}]", "must be [allocation id, reason]")
        evicted = []
        touched: dict[tuple[str, str], Job] = {}
        for alloc_id, why in evictions:
            alloc = self.allocs.get(alloc_id)
            if alloc is None or alloc.desired != DESIRED_RUN or alloc.terminal:
                continue
            self._stop_alloc(alloc, cmd.ts, index, why[:200])
            evicted.append(alloc_id)
            job = self.jobs.get((alloc.namespace, alloc.job))
            if job is not None and job.status == JOB_RUNNING:
                touched[job.key] = job
        for job in touched.values():
            self._reconcile(job, cmd.ts, index)
        if evicted:
            self._event(index, "allocs_preempted", allocations=evicted)
        free = {name: self.node_free(node) for name, node in self.nodes.items()}
        placed: list[str] = []
        rejected: list[list[str]] = []
        # Re-check each placement against the state as it is now, not as the planner saw it:
        # two plans made from the same view can never oversubscribe a node.
        for alloc_id, node_name in parsed:
            alloc = self.allocs.get(alloc_id)
            node = self.nodes.get(node_name)
            reason = None
            if alloc is None or alloc.desired != DESIRED_RUN or alloc.state != PENDING:
                reason = "allocation no longer pending"
            elif alloc.node is not None:
                reason = "allocation already placed"
            elif node is None or not node.eligible:
                reason = "node not ready or draining"
            else:
                cpu, mem = free[node_name]
                if alloc.resources.cpu > cpu + 1e-9 or alloc.resources.memory_mb > mem:
                    reason = "node has no room"
            if reason is not None:
                rejected.append([alloc_id, reason])
                continue
            assert alloc is not None
            cpu, mem = free[node_name]
            free[node_name] = (cpu - alloc.resources.cpu, mem - alloc.resources.memory_mb)
            alloc.node = node_name
            self.on_node.setdefault(node_name, {})[alloc.id] = None
            alloc.placed_at = cmd.ts
            alloc.updated_at = cmd.ts
            alloc.modify_index = index
            alloc.message = ""
            placed.append(alloc_id)
        if placed:
            self._event(index, "allocs_placed", placements=[[a, self.allocs[a].node]
                                                            for a in placed])
        return {"placed": placed, "rejected": rejected, "evicted": evicted}

    def _alloc_update(self, cmd: C.Command, index: int) -> Result:
        node = cmd.args.get("node")
        updates = cmd.args.get("updates")
        if not isinstance(node, str) or not isinstance(updates, list):
            raise invalid("updates", "must be a node name and a list of updates")
        checked: list[tuple[Allocation, dict[str, Any]]] = []
        ignored: list[str] = []
        for i, u in enumerate(updates):
            if not isinstance(u, dict) or not isinstance(u.get("id"), str):
                raise invalid(f"updates[{i}].id", "must be a string")
            state = u.get("state")
            if state not in REPORTED_STATES:
                raise invalid(f"updates[{i}].state", "not a reportable state")
            for f in ("pid", "restarts", "exit_code"):
                v = u.get(f)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    raise invalid(f"updates[{i}].{f}", "must be an integer")
            if u.get("health") is not None and u["health"] not in HEALTH_STATES:
                raise invalid(f"updates[{i}].health", "must be healthy, unhealthy or starting")
            for f in ("signal", "message", "reason"):
                v = u.get(f)
                if v is not None and (not isinstance(v, str) or len(v) > 2000):
                    raise invalid(f"updates[{i}].{f}", "must be a short string")
            alloc = self.allocs.get(u["id"])
            # Reports for allocations this node no longer holds come from a node that was
            # cut off; the leader has already replaced them, so they change nothing.
            if alloc is None or alloc.node != node or alloc.terminal:
                ignored.append(u["id"])
                continue
            checked.append((alloc, u))
        jobs: dict[tuple[str, str], Job] = {}
        for alloc, u in checked:
            before = (alloc.state, alloc.health)
            state = AllocState(u["state"])
            job = self.jobs.get((alloc.namespace, alloc.job))
            if (state == "exited" and u.get("exit_code") == 0 and job is not None
                    and job.spec.type == "batch"):
                state = COMPLETE
            if state == RUNNING and alloc.state != RUNNING and alloc.state != PAUSED:
                alloc.running_since = cmd.ts
            elif state not in (RUNNING, PAUSED):
                alloc.running_since = None
            alloc.state = state
            alloc.health = u.get("health")
            alloc.reason = u.get("reason")
            alloc.pid = u.get("pid")
            alloc.restarts = u.get("restarts") or alloc.restarts
            alloc.exit_code = u.get("exit_code")
            alloc.signal = u.get("signal")
            alloc.message = u.get("message") or ""
            alloc.updated_at = cmd.ts
            alloc.modify_index = index
            if before != (alloc.state, alloc.health):
                self._event(index, "alloc_" + alloc.state, alloc=alloc.id,
                            namespace=alloc.namespace, job=alloc.job, node=node,
                            pid=alloc.pid, exit_code=alloc.exit_code, signal=alloc.signal,
                            reason=alloc.reason, health=alloc.health,
                            restarts=alloc.restarts)
            if job is not None:
                jobs[job.key] = job
        for job in jobs.values():
            self._collect_job(job)
        return {"updated": len(checked), "ignored": ignored}

    # ---------------------------------------------------------------- helpers

    def _event(self, index: int, kind: str, **payload: Any) -> None:
        self.add_event({"index": index, "ts": getattr(self, "_ts", 0.0), "type": kind,
                        **{k: v for k, v in payload.items() if v is not None}})

    def add_event(self, event: dict[str, Any]) -> None:
        # Several events can share a log index; `seq` numbers them within it so a stream
        # can resume exactly after the last one a client saw ("index.seq").
        last = self.events[-1] if self.events else None
        seq = last["seq"] + 1 if last is not None and last["index"] == event["index"] else 0
        event["seq"] = seq
        event["id"] = f"{event['index']}.{seq}"
        self.events.append(event)

    def events_since(self, index: int, seq: int = -1, limit: int = 1000,
                     kinds: set[str] | None = None) -> list[dict[str, Any]]:
        """Events after (index, seq), of the given kinds; seq -1 means after every event
        of `index`. The limit applies after filtering, so a filtered reader that resumes
        from its last event never sees the same window twice."""
        out = []
        for e in self.events:
            if e["index"] > index or (e["index"] == index and seq >= 0 and e["seq"] > seq):
                if kinds and e["type"] not in kinds:
                    continue
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    @staticmethod
    def _job_key(args: dict[str, Any]) -> tuple[str, str]:
        return (check_name(args.get("namespace"), "namespace"), check_name(args.get("name"),
                                                                            "name"))

    def _check_quota(self, ns: str, usage: Usage) -> None:
        if self.planted_quota_skip is not None and self.planted_quota_skip():
            return
        rej = check_fits(self.namespaces.get(ns, Quota()), usage)
        if rej is not None:
            raise rej

    def _new_alloc(self, job: Job, ts: float, index: int) -> Allocation:
        self.alloc_seq += 1
        alloc = Allocation(id=f"{job.name}-{self.alloc_seq:06d}", namespace=job.namespace,
                           job=job.name, version=job.version, resources=job.spec.resources,
                           created_at=ts, updated_at=ts, modify_index=index)
        self.allocs[alloc.id] = alloc
        return alloc

    def _stop_alloc(self, alloc: Allocation, ts: float, index: int, why: str) -> None:
        if alloc.desired == DESIRED_STOP and alloc.terminal:
            return
        alloc.desired = DESIRED_STOP
        alloc.message = why
        alloc.updated_at = ts
        alloc.modify_index = index
        if alloc.node is None and not alloc.terminal:
            # Never placed: nothing runs anywhere, so it is stopped at once.
            alloc.state = STOPPED

    def _reconcile(self, job: Job, ts: float, index: int) -> None:
        """Bring the job's live allocations to `count` of its current version."""
        live: list[Allocation] = []
        old: list[Allocation] = []
        done = 0
        rolling = job.rollout is not None and job.rollout.status == DeploymentStatus.RUNNING
        for alloc in self.job_allocs(job):
            if alloc.state == COMPLETE and alloc.version == job.version:
                done += 1  # a finished batch instance still counts towards `count`
                continue
            if alloc.desired != DESIRED_RUN or alloc.terminal:
                continue
            if alloc.version != job.version:
                if rolling and alloc.state in (RUNNING, PAUSED, STARTING):
                    old.append(alloc)  # the rollout replaces these step by step
                else:
                    self._stop_alloc(alloc, ts, index, f"replaced by version {job.version}")
            else:
                live.append(alloc)
        want = max(0, job.spec.count - done)
        if rolling and old:
            # New instances come from deployment steps; only trim what exceeds the count.
            excess = len(live) + len(old) - want
            if excess > 0:
                for alloc in sorted(old, key=lambda a: a.id)[:excess]:
                    self._stop_alloc(alloc, ts, index, "scaled down")
            if len(live) > want:
                for alloc in sorted(live, key=lambda a: a.id, reverse=True)[:len(live) - want]:
                    self._stop_alloc(alloc, ts, index, "scaled down")
            self._trim_history(job)
            return
        if len(live) > want:
            # Give up unplaced ones first, then the newest.
            live.sort(key=lambda a: (a.node is not None, a.created_at, a.id))
            for alloc in live[: len(live) - want]:
                self._stop_alloc(alloc, ts, index, "scaled down")
        for _ in range(want - len(live)):
            self._new_alloc(job, ts, index)
        self._trim_history(job)

    def _collect_job(self, job: Job) -> None:
        """Remove a stopping job once none of its processes can still be running."""
        if job.status != JOB_STOPPING:
            self._trim_history(job)
            return
        allocs = self.job_allocs(job)
        if all(a.terminal for a in allocs):
            for a in allocs:
                self._forget_alloc(a)
            del self.jobs[job.key]

    def _trim_history(self, job: Job) -> None:
        done = [a for a in self.job_allocs(job) if a.terminal]
        excess = len(done) - TERMINAL_ALLOCS_KEPT_PER_JOB
        if excess > 0:
            done.sort(key=lambda a: (a.updated_at, a.id))
            for a in done[:excess]:
                self._forget_alloc(a)

    # ------------------------------------------------------------------ reads

    def job_allocs(self, job: Job) -> list[Allocation]:
        return [a for a in self.allocs.values()
                if a.namespace == job.namespace and a.job == job.name]

    def _account(self, ns: str, before: Usage, after: Usage) -> None:
        c, m, p = self.usage.get(ns, (0, 0, 0))
        b, a = _ints(before), _ints(after)
        self.usage[ns] = (c - b[0] + a[0], m - b[1] + a[1], p - b[2] + a[2])

    def namespace_usage(self, ns: str) -> Usage:
        c, m, p = self.usage.get(ns, (0, 0, 0))
        return Usage(c / 1_000_000, m, p)

    def recompute_usage(self) -> dict[str, tuple[int, int, int]]:
        usage: dict[str, tuple[int, int, int]] = {}
        for j in self.jobs.values():
            c, m, p = usage.get(j.namespace, (0, 0, 0))
            u = _ints(j.quota_usage())
            usage[j.namespace] = (c + u[0], m + u[1], p + u[2])
        return usage

    def namespace_view(self, ns: str) -> dict[str, Any]:
        quota = self.namespaces[ns]
        usage = self.namespace_usage(ns)
        return {"name": ns, "quota": quota.to_dict(), "usage": usage.to_dict(),
                "headroom": headroom(quota, usage)}

    def _forget_alloc(self, a: Allocation) -> None:
        del self.allocs[a.id]
        if a.node is not None:
            self.on_node.get(a.node, {}).pop(a.id, None)

    def node_allocs(self, name: str) -> list[Allocation]:
        return [self.allocs[i] for i in self.on_node.get(name, {})]

    def node_free(self, node: Node) -> tuple[float, int]:
        # Integer micro-cores: the result must not depend on the order of the sum, or a
        # replica restored from a snapshot could judge a borderline fit differently.
        cpu_u, mem = 0, 0
        for a in self.node_allocs(node.name):
            if a.holds_resources:
                cpu_u += round(a.resources.cpu * 1_000_000)
                mem += a.resources.memory_mb
        return (node.capacity.cpu - cpu_u / 1_000_000, node.capacity.memory_mb - mem)

    def node_view(self, node: Node) -> dict[str, Any]:
        cpu, mem = self.node_free(node)
        return {"name": node.name, "status": node.status, "address": node.address,
                "labels": node.labels, "attributes": node.attributes, "drain": node.drain,
                "drain_deadline": node.drain_deadline, "eligible": node.eligible,
                "capacity": node.capacity.to_dict(),
                "free": {"cpu": round(cpu, 6), "memory_mb": mem},
                "allocations": sum(1 for a in self.node_allocs(node.name)
                                   if a.holds_resources),
                "registered_at": node.registered_at, "updated_at": node.updated_at}

    def job_counts(self, job: Job) -> dict[str, int]:
        counts = {"desired": job.spec.count if job.status == JOB_RUNNING else 0,
                  "pending": 0, "starting": 0, "running": 0, "paused": 0, "exited": 0,
                  "failed": 0, "lost": 0, "stopped": 0, "complete": 0}
        for a in self.job_allocs(job):
            if a.version == job.version or a.state in (RUNNING, STARTING):
                counts[a.state] = counts.get(a.state, 0) + 1
        return counts

    def job_view(self, job: Job) -> dict[str, Any]:
        return {"namespace": job.namespace, "name": job.name, **job.spec.to_dict(),
                "version": job.version, "status": self.job_status(job),
                "created_at": job.created_at, "updated_at": job.updated_at,
                "modify_index": job.modify_index, "deployment": job.deployment,
                "counts": self.job_counts(job)}

    def job_status(self, job: Job) -> str:
        if job.status == JOB_RUNNING and job.spec.type == "batch" and job.spec.count > 0:
            done = sum(1 for a in self.job_allocs(job)
                       if a.version == job.version and a.state == COMPLETE)
            if done >= job.spec.count:
                return "complete"
        return job.status

    @staticmethod
    def alloc_view(a: Allocation) -> dict[str, Any]:
        return {"id": a.id, "namespace": a.namespace, "job": a.job, "version": a.version,
                "node": a.node, "desired": a.desired, "state": a.state, "pid": a.pid,
                "restarts": a.restarts, "exit_code": a.exit_code, "signal": a.signal,
                "message": a.message, "resources": a.resources.to_dict(),
                "created_at": a.created_at, "updated_at": a.updated_at,
                "placed_at": a.placed_at, "modify_index": a.modify_index, "health": a.health,
                "reason": a.reason, "running_since": a.running_since}

    def node_assignments(self, node_name: str) -> list[dict[str, Any]]:
        """What an agent must run (and stop) now: its non-terminal allocations with specs."""
        out = []
        for a in self.node_allocs(node_name):
            if a.terminal:
                continue
            job = self.jobs.get((a.namespace, a.job))
            spec = job.spec.to_dict() if job is not None else None
            out.append({"id": a.id, "namespace": a.namespace, "job": a.job,
                        "version": a.version, "desired": a.desired, "state": a.state,
                        "spec": spec})
        return out

    def pending_allocs(self) -> list[Allocation]:
        return [a for a in self.allocs.values()
                if a.state == PENDING and a.node is None and a.desired == DESIRED_RUN]

    # -------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        return msgpack.packb({
            "v": SNAPSHOT_VERSION,
            "index": self.index,
            "alloc_seq": self.alloc_seq,
            "namespaces": [[n, q.to_dict()] for n, q in self.namespaces.items()],
            "jobs": [j.to_dict() for j in self.jobs.values()],
            "allocs": [a.to_dict() for a in self.allocs.values()],
            "nodes": [n.to_dict() for n in self.nodes.values()],
            "idempotency": [[k, d, r] for k, (d, r) in self.idempotency.items()],
        }, use_bin_type=True)

    def restore(self, data: bytes) -> None:
        """Replace the whole state; raises on a malformed snapshot, leaving it unchanged."""
        d = msgpack.unpackb(data, raw=False, strict_map_key=True)
        if not isinstance(d, dict) or d.get("v") != SNAPSHOT_VERSION:
            raise ValueError("unsupported snapshot version")
        namespaces = {n: Quota.from_dict(q) for n, q in d["namespaces"]}
        jobs = {(j["namespace"], j["name"]): Job.from_dict(j) for j in d["jobs"]}
        allocs = {a["id"]: Allocation.from_dict(a) for a in d["allocs"]}
        nodes = {n["name"]: Node.from_dict(n) for n in d["nodes"]}
        idem: OrderedDict[str, tuple[str, Result]] = OrderedDict(
            (k, (dg, r)) for k, dg, r in d["idempotency"])
        self.namespaces, self.jobs, self.allocs, self.nodes = namespaces, jobs, allocs, nodes
        self.idempotency = idem
        self.alloc_seq = int(d["alloc_seq"])
        self.index = int(d["index"])
        self.usage = self.recompute_usage()
        self.broken = None
        self.on_node = {}
        for a in allocs.values():
            if a.node is not None:
                self.on_node.setdefault(a.node, {})[a.id] = None

    def digest(self) -> str:
        """A fingerprint of the state, for comparing replicas."""
        return hashlib.sha256(self.snapshot()).hexdigest()


def _ints(u: Usage) -> tuple[int, int, int]:
    return (round(u.cpu * 1_000_000), u.memory_mb, u.processes)


def _str_map(raw: Any, field: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or len(raw) > MAX_LABELS:
        raise invalid(field, f"must be an object of at most {MAX_LABELS} strings")
    for k, v in raw.items():
        if not isinstance(k, str) or not isinstance(v, str) or len(k) > 128 or len(v) > 512:
            raise invalid(f"{field}.{k}", "keys and values must be short strings")
    return dict(sorted(raw.items()))


_HANDLERS: dict[str, Callable[[StateMachine, C.Command, int], Result]] = {
    C.NOOP: StateMachine._noop,
    C.NS_PUT: StateMachine._ns_put,
    C.JOB_PUT: StateMachine._job_put,
    C.JOB_SCALE: StateMachine._job_scale,
    C.JOB_DELETE: StateMachine._job_delete,
    C.NODE_REGISTER: StateMachine._node_register,
    C.NODE_STATUS: StateMachine._node_status,
    C.PLAN: StateMachine._plan,
    C.ALLOC_UPDATE: StateMachine._alloc_update,
    C.NODE_DRAIN: StateMachine._node_drain,
    C.MIGRATE: StateMachine._migrate,
    C.DEPLOY_STEP: StateMachine._deploy_step,
    C.JOB_REVERT: StateMachine._job_revert,
}
