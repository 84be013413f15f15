"""The tables of a decoded snapshot map, as a new `Store` with its indexes built.

Apart from `snapshot.py` so that a handler (the restore command) can build a store from a
snapshot without importing the idempotency table's module, which imports the handlers.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from hacontrol.model.acl import Policy, Token
from hacontrol.model.alerts import AlertRule, AlertState
from hacontrol.model.cluster_config import ClusterConfig
from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.resources import Quota

from .registry import Registry
from .services import rebuild
from .store import Store

SNAPSHOT_VERSION = 1


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: decoding a whole state creates millions of
    containers, each of which counts towards the next collection, and the collections
    (ever longer as the heap grows) were 43 % of unpacking and decoding 10,000 jobs
    (A/B, medians of 4: 3.8 s vs 6.7 s on a loaded machine). Nothing decoded is cyclic
    garbage; collection resumes after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _rows(rows: Any) -> Any:
    return rows


def decode_store(d: Any, rows: Callable[[Any], Iterable[Any]] = _rows) -> Store:
    """A new store from the snapshot map `d`; raises on a malformed one. `rows` wraps
    each large table's rows (a decode off the Raft thread rests between them)."""
    if not isinstance(d, dict) or d.get("v") != SNAPSHOT_VERSION:
        raise ValueError("unsupported snapshot version")
    store = Store()
    store.namespaces = {n: Quota.from_dict(q) for n, q in d["namespaces"]}
    store.jobs = {(j["namespace"], j["name"]): Job.from_dict(j) for j in rows(d["jobs"])}
    store.allocs = {a["id"]: Allocation.from_dict(a) for a in rows(d["allocs"])}
    store.nodes = {n["name"]: Node.from_dict(n) for n in rows(d["nodes"])}
    store.alloc_seq = int(d["alloc_seq"])
    store.index = int(d["index"])
    store.acl_bootstrapped = bool(d.get("acl_bootstrapped", False))
    store.acl_policies = {p["name"]: Policy.from_dict(p) for p in d.get("acl_policies", [])}
    store.acl_tokens = {t["accessor_id"]: Token.from_dict(t) for t in d.get("acl_tokens", [])}
    cred = d.get("controller_credential")
    store.controller_credential = cred if isinstance(cred, str) else None
    store.alert_rules = {r["name"]: AlertRule.from_dict(r) for r in d.get("alert_rules", [])}
    store.alert_states = {a["name"]: AlertState.from_dict(a)
                          for a in d.get("alert_states", [])}
    config = d.get("cluster_config")
    store.cluster_config = ClusterConfig.from_dict(config) if isinstance(config, dict) else None
    store.rebuild_indexes()
    store.registry = rebuild(store, store.index)
    store.registry.keep_indexes(*Registry.decode(d.get("services")))
    return store
