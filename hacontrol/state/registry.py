"""The service registry: where each service's live, healthy allocations listen.

Derived, never written by a command of its own: after every applied entry the allocations
and jobs it touched are looked at again (`services.refresh`), and what each one offers
replaces what it offered before. A service (per namespace) exists while a running job
declares it or an allocation serves it; its endpoints, in allocation id order, are every
serving allocation's, whatever job it belongs to; its `index` is the log index at which
that set last changed (or the service appeared), and only then, so a blocking query woken
by it always has news.

Kept per allocation, so that an entry reporting on one allocation costs a few dictionary
operations, an insertion into one sorted list and one copy of it, not a walk over its
job's allocations: that first version made an `alloc_update` entry in a job of 1,000
allocations 14.6x as costly to apply; now the registry is 11 % of such an entry and 3 % of
one for a job without services (`bench/services.py`, medians of 5 x 2,000 entries, timed
inside apply on a loaded machine).
"""

from __future__ import annotations

import bisect
from typing import Any, NamedTuple

JobKey = tuple[str, str]
ServiceKey = tuple[str, str]  # (namespace, service name)


class Endpoint(NamedTuple):
    allocation: str
    node: str
    address: str
    port: int

    def to_dict(self) -> dict[str, Any]:
        return {"allocation": self.allocation, "node": self.node, "address": self.address,
                "port": self.port}


class Registry:
    def __init__(self) -> None:
        self.endpoints: dict[ServiceKey, tuple[Endpoint, ...]] = {}
        self.index: dict[ServiceKey, int] = {}
        # The latest index at which any service changed, appeared or went away: what a
        # listing (and a service nobody offers) answers with.
        self.last_index = 0
        # Which running jobs declare each service, and what each job declares.
        self.declared: dict[JobKey, frozenset[str]] = {}
        self._declaring: dict[ServiceKey, dict[JobKey, None]] = {}
        # Allocation id -> (its job, service name -> its endpoint there).
        self.serving: dict[str, tuple[JobKey, dict[str, Endpoint]]] = {}
        self.by_job: dict[JobKey, dict[str, None]] = {}  # the serving ones, per job
        self._members: dict[ServiceKey, dict[str, Endpoint]] = {}
        # The same endpoints, sorted (by allocation id: endpoints compare by it first, and
        # it is unique within a service), so publishing them is one copy.
        self._sorted: dict[ServiceKey, list[Endpoint]] = {}
        self._changed: dict[ServiceKey, None] = {}

    # ------------------------------------------------------------ changes

    def declare(self, job: JobKey, names: frozenset[str]) -> None:
        old = self.declared.get(job, frozenset())
        if old == names:
            return
        if names:
            self.declared[job] = names
        else:
            self.declared.pop(job, None)
        for name in sorted(old - names):
            key = (job[0], name)
            declaring = self._declaring.get(key, {})
            declaring.pop(job, None)
            if not declaring:
                self._declaring.pop(key, None)
            self._changed[key] = None
        for name in sorted(names - old):
            key = (job[0], name)
            self._declaring.setdefault(key, {})[job] = None
            self._changed[key] = None

    def serve(self, alloc_id: str, job: JobKey, offer: dict[str, Endpoint]) -> None:
        """Set what the allocation serves now (empty: nothing)."""
        old_job, old = self.serving.get(alloc_id, (job, {}))
        if old == offer and old_job == job:
            return
        for name, endpoint in old.items():
            if offer.get(name) != endpoint or old_job != job:
                self._leave((old_job[0], name), alloc_id)
        for name, endpoint in offer.items():
            if old.get(name) != endpoint or old_job != job:
                self._join((job[0], name), endpoint)
        if old:
            ids = self.by_job.get(old_job, {})
            ids.pop(alloc_id, None)
            if not ids:
                self.by_job.pop(old_job, None)
        if offer:
            self.serving[alloc_id] = (job, offer)
            self.by_job.setdefault(job, {})[alloc_id] = None
        else:
            self.serving.pop(alloc_id, None)

    def _join(self, key: ServiceKey, endpoint: Endpoint) -> None:
        self._leave(key, endpoint.allocation)
        self._members.setdefault(key, {})[endpoint.allocation] = endpoint
        bisect.insort(self._sorted.setdefault(key, []), endpoint)
        self._changed[key] = None

    def _leave(self, key: ServiceKey, alloc_id: str) -> None:
        members = self._members.get(key, {})
        gone = members.pop(alloc_id, None)
        if gone is None:
            return
        ordered = self._sorted[key]
        del ordered[bisect.bisect_left(ordered, gone)]
        if not members:
            self._members.pop(key, None)
            self._sorted.pop(key, None)
        self._changed[key] = None

    def commit(self, index: int) -> list[ServiceKey]:
        """Publish the changes made since the last commit at `index`; returns the
        services whose endpoint set changed (or that appeared or went away)."""
        changed: list[ServiceKey] = []
        for key in sorted(self._changed):
            ordered = self._sorted.get(key)
            if ordered is None and key not in self._declaring:
                if key in self.endpoints:
                    del self.endpoints[key]
                    del self.index[key]
                    changed.append(key)
                continue
            now = tuple(ordered) if ordered is not None else ()
            if key not in self.endpoints or self.endpoints[key] != now:
                self.endpoints[key] = now
                self.index[key] = index
                changed.append(key)
        self._changed = {}
        if changed:
            self.last_index = index
        return changed

    # ------------------------------------------------------------ snapshots and views

    def keep_indexes(self, indexes: dict[ServiceKey, int], last_index: int) -> None:
        """Take the indexes a snapshot recorded (after a rebuild from its tables): a
        replica that installed it answers as one that applied every entry."""
        for key in self.index:
            if key in indexes:
                self.index[key] = indexes[key]
        self.last_index = max([last_index, *self.index.values()])

    def view(self, key: ServiceKey) -> dict[str, Any]:
        """The API's answer for one service; one nobody offers has no endpoints and the
        registry's latest index."""
        return {"namespace": key[0], "name": key[1],
                "index": self.index.get(key, self.last_index),
                "endpoints": [e.to_dict() for e in self.endpoints.get(key, ())]}

    def encode(self) -> list[list[Any]]:
        """The indexes, for the snapshot: [[namespace, name, index], ...] in key order,
        then ["", "", last_index] when the latest change removed a service."""
        out: list[list[Any]] = [[ns, name, i] for (ns, name), i in sorted(self.index.items())]
        if self.last_index > max(self.index.values(), default=0):
            out.append(["", "", self.last_index])
        return out

    @staticmethod
    def decode(raw: Any) -> tuple[dict[ServiceKey, int], int]:
        indexes: dict[ServiceKey, int] = {}
        last = 0
        for ns, name, i in raw or ():
            if ns == "" and name == "":
                last = int(i)
            else:
                indexes[(str(ns), str(name))] = int(i)
        return indexes, max([last, *indexes.values()])
