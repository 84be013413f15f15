"""The replicated tables and the indexes that keep every read proportional to its answer.

Tables: namespaces, jobs, allocations, nodes, ACL policies and tokens. Indexes (derived, rebuilt on restore, never
snapshotted): allocations by job, by node, the pending ones and each job's finished ones;
resource usage per namespace; tokens by secret hash; what the health score and the alert
rules judge (`tally.py`). Every change to an allocation's job, node, state or pending-ness goes through the
methods here so that the indexes cannot drift from the tables. Iteration orders are those
of the allocation table (creation order), or of placement for a node, so that every
replica walks them identically.
"""

from __future__ import annotations

import copy

from hacontrol.model.acl import Policy, Token
from hacontrol.model.alerts import AlertRule, AlertState
from hacontrol.model.cluster_config import ClusterConfig
from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.resources import Quota, Usage
from hacontrol.model.states import AllocState, DesiredState

from .registry import Registry
from .tally import Tally

DEFAULT_NAMESPACE = "default"
# Forgotten allocations remembered per node for the agents' delta sync: an agent that
# missed more than this gets a full answer.
REMOVED_KEPT = 512

JobKey = tuple[str, str]


class Store:
    def __init__(self) -> None:
        self.namespaces: dict[str, Quota] = {DEFAULT_NAMESPACE: Quota()}
        self.jobs: dict[JobKey, Job] = {}
        self.allocs: dict[str, Allocation] = {}
        self.nodes: dict[str, Node] = {}
        self.alloc_seq = 0
        self.index = 0
        # Indexes: key -> ids (dicts as insertion-ordered sets).
        self.by_node: dict[str, dict[str, None]] = {}
        self.by_job: dict[JobKey, dict[str, None]] = {}
        # Allocations waiting for a node, by job: the leader judges each job once per plan
        # and takes its pending ids in one step, instead of walking 100,000 allocations one
        # by one under the apply lock on every plan (bench/scheduler.py --scale).
        self.pending: dict[JobKey, dict[str, None]] = {}
        # Each job's terminal allocations, so trimming a job's history after a report
        # costs what it keeps (at most TERMINAL_ALLOCS_KEPT_PER_JOB + 1), not a walk over
        # all of the job's allocations: that walk was 88 % of applying a report on a job
        # of 1,000 allocations, 98 % at 10,000 (bench/alloc_update.py). Every change of
        # an allocation's state goes through `set_state`.
        self.done: dict[JobKey, dict[str, None]] = {}
        # The sum of job usages per namespace, so a quota check costs O(1). Integers
        # (micro-cores): float sums depend on their order, and the running sum must agree
        # to the last bit with a recomputation after a restore.
        self.usage: dict[str, tuple[int, int, int]] = {}
        # What the allocations holding resources on each node hold (micro-cores, MiB;
        # derived, never snapshotted), so a node's free room costs O(1): summing it over the
        # node's allocations for every node walked every allocation of the cluster on each
        # placement plan (bench/scheduler.py --scale). Every change of an allocation's node
        # or state goes through `place` or `set_state`. The third number counts them: a
        # node's view (`GET /v1/nodes`) counted them by walking its allocations, 75 % of
        # building the list at 1,000 nodes and 20,000 allocations.
        self.node_used: dict[str, tuple[int, int, int]] = {}
        # How many of each job's allocations are in each (version, state) (derived, never
        # snapshotted): a job's counts and status in every read of it walked all its
        # allocations (`GET /v1/jobs` walked every allocation of the cluster). Every
        # allocation's state changes through `set_state`; its version never changes.
        self.job_states: dict[JobKey, dict[tuple[int, str], int]] = {}
        # Access control. Tokens by accessor id; `acl_by_hash` is their index by the
        # SHA-256 of the secret (derived, never snapshotted).
        self.acl_policies: dict[str, Policy] = {}
        self.acl_tokens: dict[str, Token] = {}
        self.acl_bootstrapped = False
        self.acl_by_hash: dict[str, str] = {}
        # What the controllers present to agents (None: not proposed yet; each replica then
        # uses the one it derives from its cluster secret, which is what gets proposed). A
        # secret, in the state like the cluster secret is on the replicas' disks: it never
        # leaves a replica through the API.
        self.controller_credential: str | None = None
        # Alerting: the rules, each alert's state with its notifications, and the cluster's
        # settings (None: never set, every default applies).
        self.alert_rules: dict[str, AlertRule] = {}
        self.alert_states: dict[str, AlertState] = {}
        self.cluster_config: ClusterConfig | None = None
        # For the agents' delta sync (derived, never snapshotted, not in the digest): per
        # node, the ids of allocations forgotten while placed there, with the index they were
        # forgotten at, so an agent that last synced before that learns they are gone; only
        # the latest REMOVED_KEPT per node are kept, and an agent that synced before
        # `removed_floor` (or before this store was restored, `delta_floor`) gets a full
        # answer instead of a delta.
        self.removed: dict[str, list[tuple[int, str]]] = {}
        self.removed_floor: dict[str, int] = {}
        self.delta_floor = 0
        # Nodes whose allocations were placed, stopped or forgotten since the API last
        # looked (it wakes only those nodes' long polls); drained under the apply lock.
        self.touched_nodes: set[str] = set()
        # The service registry (derived from the tables in `apply`, see `services.py`;
        # only its indexes are snapshotted) and the jobs to look at again once the entry
        # being applied is done.
        self.registry = Registry()
        self.dirty_jobs: set[JobKey] = set()
        # Tables a restore replaced, for the machine to free off the apply lock (never
        # read: freeing a 10,000-job state took 50-280 ms).
        self.retired: list[object] = []
        self.dirty_allocs: set[str] = set()
        self.tally = Tally()

    def touch_job(self, key: JobKey) -> None:
        """Mark a job whose spec or status changed: the registry looks at it (and all its
        allocations) again after this entry."""
        self.dirty_jobs.add(key)

    def touch_alloc(self, alloc_id: str) -> None:
        """Mark an allocation whose state, health, ports or node changed (or that was
        forgotten): the registry looks at it again after this entry."""
        self.dirty_allocs.add(alloc_id)
        self.tally.touch(alloc_id)

    # ------------------------------------------------------------ tokens

    def add_token(self, token: Token) -> None:
        self.acl_tokens[token.accessor_id] = token
        self.acl_by_hash[token.secret_hash] = token.accessor_id

    def remove_token(self, accessor_id: str) -> Token | None:
        token = self.acl_tokens.pop(accessor_id, None)
        if token is not None:
            self.acl_by_hash.pop(token.secret_hash, None)
        return token

    def token_by_hash(self, secret_hash: str) -> Token | None:
        accessor = self.acl_by_hash.get(secret_hash)
        return None if accessor is None else self.acl_tokens.get(accessor)

    # ------------------------------------------------------------ allocations

    def _hold(self, alloc: Allocation, sign: int) -> None:
        """Count `alloc`'s resources on its node (sign 1) or no longer (sign -1)."""
        assert alloc.node is not None
        c, m, n = self.node_used.get(alloc.node, (0, 0, 0))
        c += sign * round(alloc.resources.cpu * 1_000_000)
        m += sign * alloc.resources.memory_mb
        n += sign
        if c or m or n:
            self.node_used[alloc.node] = (c, m, n)
        else:
            self.node_used.pop(alloc.node, None)

    def _count(self, alloc: Allocation, sign: int) -> None:
        key = (alloc.namespace, alloc.job)
        counts = self.job_states.setdefault(key, {})
        at = (alloc.version, alloc.state)
        n = counts.get(at, 0) + sign
        if n:
            counts[at] = n
        else:
            del counts[at]
            if not counts:
                del self.job_states[key]

    def add_alloc(self, alloc: Allocation) -> None:
        self.allocs[alloc.id] = alloc
        self._count(alloc, 1)
        if alloc.holds_resources:
            self._hold(alloc, 1)
        self.by_job.setdefault((alloc.namespace, alloc.job), {})[alloc.id] = None
        self.tally.touch(alloc.id)
        if alloc.terminal:
            self.done.setdefault((alloc.namespace, alloc.job), {})[alloc.id] = None
        if alloc.node is not None:
            self.by_node.setdefault(alloc.node, {})[alloc.id] = None
        elif alloc.state == AllocState.PENDING and alloc.desired == DesiredState.RUN:
            self.pending.setdefault((alloc.namespace, alloc.job), {})[alloc.id] = None

    def set_state(self, alloc: Allocation, state: AllocState) -> None:
        """Change an allocation's state (the caller marks it with `touch_alloc`)."""
        was = alloc.terminal
        held = alloc.holds_resources
        self._count(alloc, -1)
        alloc.state = state
        self._count(alloc, 1)
        if alloc.holds_resources != held:
            self._hold(alloc, -1 if held else 1)
        if alloc.terminal != was:
            key = (alloc.namespace, alloc.job)
            if was:
                ids = self.done.get(key, {})
                ids.pop(alloc.id, None)
                if not ids:
                    self.done.pop(key, None)
            else:
                self.done.setdefault(key, {})[alloc.id] = None

    def job_done(self, key: JobKey) -> list[Allocation]:
        """The job's terminal allocations (in the order they became terminal)."""
        return [self.allocs[i] for i in self.done.get(key, {})]

    def place(self, alloc: Allocation, node: str) -> None:
        if alloc.holds_resources:
            self._hold(alloc, -1)
        alloc.node = node
        if alloc.holds_resources:
            self._hold(alloc, 1)
        self.by_node.setdefault(node, {})[alloc.id] = None
        self._unpend(alloc)
        self.touched_nodes.add(node)

    def unpend(self, alloc: Allocation) -> None:
        """Call when an allocation stops being wanted (placed or not)."""
        self._unpend(alloc)
        if alloc.node is not None:
            self.touched_nodes.add(alloc.node)

    def forget_alloc(self, alloc: Allocation) -> None:
        del self.allocs[alloc.id]
        self._count(alloc, -1)
        if alloc.holds_resources:
            self._hold(alloc, -1)
        key = (alloc.namespace, alloc.job)
        self.dirty_allocs.add(alloc.id)
        self.tally.touch(alloc.id)
        for index in (self.by_job, self.done):
            ids = index.get(key)
            if ids is not None:
                ids.pop(alloc.id, None)
                if not ids:
                    del index[key]
        if alloc.node is not None:
            self.by_node.get(alloc.node, {}).pop(alloc.id, None)
            self._tombstone(alloc.node, alloc.id)
        self._unpend(alloc)

    def _unpend(self, alloc: Allocation) -> None:
        key = (alloc.namespace, alloc.job)
        ids = self.pending.get(key)
        if ids is not None:
            ids.pop(alloc.id, None)
            if not ids:
                del self.pending[key]

    def _tombstone(self, node: str, alloc_id: str) -> None:
        gone = self.removed.setdefault(node, [])
        gone.append((self.index, alloc_id))
        if len(gone) > REMOVED_KEPT:
            # Dropped in halves so the trimming costs O(1) per forgotten allocation.
            cut = len(gone) // 2
            self.removed_floor[node] = gone[cut - 1][0]
            del gone[:cut]
        self.touched_nodes.add(node)

    def removed_since(self, node: str, index: int) -> list[str] | None:
        """Ids of allocations forgotten on `node` after `index`; None when that history
        is no longer kept (the caller must then send everything)."""
        if index < self.delta_floor or index < self.removed_floor.get(node, 0):
            return None
        gone = self.removed.get(node, ())
        out: list[str] = []
        for i in range(len(gone) - 1, -1, -1):
            at, alloc_id = gone[i]
            if at <= index:
                break
            out.append(alloc_id)
        return out

    def job_allocs(self, job: Job) -> list[Allocation]:
        return [self.allocs[i] for i in self.by_job.get(job.key, {})]

    def node_allocs(self, name: str) -> list[Allocation]:
        return [self.allocs[i] for i in self.by_node.get(name, {})]

    def pending_allocs(self) -> list[Allocation]:
        return [self.allocs[i] for ids in self.pending.values() for i in ids]

    def node_free(self, node: Node) -> tuple[float, int]:
        """(cores, MiB) not held by allocations on the node."""
        # Integer micro-cores: the result must not depend on the order of the sum, or a
        # replica restored from a snapshot could judge a borderline fit differently.
        cpu_u, mem, _ = self.node_used.get(node.name, (0, 0, 0))
        return (node.capacity.cpu - cpu_u / 1_000_000, node.capacity.memory_mb - mem)

    def job_states_of(self, job: Job) -> dict[tuple[int, str], int]:
        """How many of the job's allocations are in each (version, state); read only."""
        return self.job_states.get(job.key, {})

    def node_holding(self, name: str) -> int:
        """How many allocations hold resources on the node."""
        return self.node_used.get(name, (0, 0, 0))[2]

    # ------------------------------------------------------------ usage

    def account(self, ns: str, before: Usage, after: Usage) -> None:
        c, m, p = self.usage.get(ns, (0, 0, 0))
        b, a = before.as_ints(), after.as_ints()
        self.usage[ns] = (c - b[0] + a[0], m - b[1] + a[1], p - b[2] + a[2])

    def namespace_usage(self, ns: str) -> Usage:
        c, m, p = self.usage.get(ns, (0, 0, 0))
        return Usage(c / 1_000_000, m, p)

    def recompute_usage(self) -> dict[str, tuple[int, int, int]]:
        usage: dict[str, tuple[int, int, int]] = {}
        for j in self.jobs.values():
            c, m, p = usage.get(j.namespace, (0, 0, 0))
            u = j.quota_usage().as_ints()
            usage[j.namespace] = (c + u[0], m + u[1], p + u[2])
        return usage

    def fork(self, key: JobKey) -> Store:
        """A copy to try a command on the job `key` against (a dry run, `job plan`).

        What applying such a command may change is copied: the job, its allocations, the
        indexes and per-node histories they are in, the pending set and the usage sums.
        Every other record is shared with this store and must not be changed through the
        copy. It costs a copy of each table's dict, not of its records (21 ms with 100,000
        allocations, `bench/dryrun.py`); the caller holds the apply lock meanwhile."""
        f = copy.copy(self)
        f.retired = []
        f.namespaces = dict(self.namespaces)
        f.jobs = dict(self.jobs)
        job = self.jobs.get(key)
        if job is not None:
            f.jobs[key] = copy.deepcopy(job)
        f.allocs = dict(self.allocs)
        ids = self.by_job.get(key, {})
        nodes = set()
        for i in ids:
            a = f.allocs[i] = copy.copy(self.allocs[i])
            if a.node is not None:
                nodes.add(a.node)
        f.by_job = dict(self.by_job)
        if key in self.by_job:
            f.by_job[key] = dict(ids)
        f.done = dict(self.done)
        if key in self.done:
            f.done[key] = dict(self.done[key])
        f.by_node = dict(self.by_node)
        f.removed = dict(self.removed)
        for n in nodes:
            if n in self.by_node:
                f.by_node[n] = dict(self.by_node[n])
            if n in self.removed:
                f.removed[n] = list(self.removed[n])
        f.removed_floor = dict(self.removed_floor)
        f.pending = dict(self.pending)
        if key in self.pending:
            f.pending[key] = dict(self.pending[key])
        f.usage = dict(self.usage)
        f.node_used = dict(self.node_used)
        f.job_states = dict(self.job_states)
        if key in self.job_states:
            f.job_states[key] = dict(self.job_states[key])
        f.touched_nodes = set()
        # A dry run never refreshes the registry (it is shared, read only, with the fork).
        f.dirty_jobs, f.dirty_allocs = set(), set()
        f.tally = self.tally.fork()
        return f

    def adopt(self, other: Store, index: int) -> None:
        """Take over `other`'s tables and indexes (a restore applied at log `index`).

        The index stays the log's and deltas start again at it; the allocation sequence
        never goes back, so no id an agent may still run is handed out twice. Every node
        known before or after is touched: their long polls wake to the new state."""
        before = set(self.nodes) | set(self.by_node)
        self.retired += [self.jobs, self.allocs, self.nodes, self.by_node, self.by_job,
                         self.pending, self.acl_tokens, self.acl_by_hash, self.registry,
                         self.removed]
        self.namespaces, self.jobs, self.allocs, self.nodes = (
            other.namespaces, other.jobs, other.allocs, other.nodes)
        self.by_node, self.by_job, self.pending = other.by_node, other.by_job, other.pending
        self.done, self.tally = other.done, other.tally
        self.usage, self.node_used = other.usage, other.node_used
        self.job_states = other.job_states
        self.acl_policies, self.acl_tokens = other.acl_policies, other.acl_tokens
        self.acl_bootstrapped, self.acl_by_hash = other.acl_bootstrapped, other.acl_by_hash
        self.alert_rules, self.alert_states = other.alert_rules, other.alert_states
        self.cluster_config = other.cluster_config
        # Derived again by the caller (`services.rebuild`), every index at the restore's.
        self.registry, self.dirty_jobs, self.dirty_allocs = other.registry, set(), set()
        # The controllers' credential is kept: this cluster's agents have pinned it.
        self.alloc_seq = max(self.alloc_seq, other.alloc_seq)
        self.index = index
        self.removed, self.removed_floor = {}, {}
        self.delta_floor = index
        self.touched_nodes |= before | set(self.nodes) | set(self.by_node)

    def rebuild_indexes(self) -> None:
        """Derive every index from the tables (after a restore)."""
        allocs = list(self.allocs.values())
        self.allocs, self.by_node, self.by_job, self.pending = {}, {}, {}, {}
        self.done, self.node_used, self.job_states = {}, {}, {}
        for a in allocs:
            self.add_alloc(a)
        self.tally = Tally.rebuild(self.allocs)
        self.usage = self.recompute_usage()
        self.acl_by_hash = {t.secret_hash: a for a, t in self.acl_tokens.items()}
        # What was forgotten before the restore is unknown: deltas start again here.
        self.removed, self.removed_floor = {}, {}
        self.delta_floor = self.index
