"""The service registry: where each service's live, healthy allocations listen.

Derived, never written by a command of its own: after every applied entry the jobs it
touched are looked at again (`services.refresh`), and each one's offer replaces its last
one here. A service's endpoints are the union of what every job offering it (in its
namespace) offers, in allocation id order; its `index` is the log index at which that set
last changed, and only then, so a blocking query woken by it always has news.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JobKey = tuple[str, str]
ServiceKey = tuple[str, str]  # (namespace, service name)


@dataclass(frozen=True, order=True)
class Endpoint:
    allocation: str
    node: str
    address: str
    port: int

    def to_dict(self) -> dict[str, Any]:
        return {"allocation": self.allocation, "node": self.node, "address": self.address,
                "port": self.port}


# What one job offers: service name -> its endpoints there (empty: declared, none healthy).
Offer = dict[str, tuple[Endpoint, ...]]


class Registry:
    def __init__(self) -> None:
        self.endpoints: dict[ServiceKey, tuple[Endpoint, ...]] = {}
        self.index: dict[ServiceKey, int] = {}
        self.offers: dict[JobKey, Offer] = {}
        self.providers: dict[ServiceKey, dict[JobKey, None]] = {}
        # The latest index at which any service changed, appeared or went away: what a
        # listing (and a service nobody offers) answers with.
        self.last_index = 0

    def offer(self, job: JobKey, offer: Offer, index: int) -> list[ServiceKey]:
        """Replace `job`'s offer; returns the services whose endpoint set changed."""
        old = self.offers.get(job, {})
        if old == offer:
            return []
        if offer:
            self.offers[job] = offer
        else:
            self.offers.pop(job, None)
        changed: list[ServiceKey] = []
        for name in sorted(old.keys() | offer.keys()):
            if name in old and name in offer and old[name] == offer[name]:
                continue
            key = (job[0], name)
            providers = self.providers.setdefault(key, {})
            if name in offer:
                providers[job] = None
            else:
                providers.pop(job, None)
            if not providers:
                del self.providers[key]
                self.endpoints.pop(key, None)
                self.index.pop(key, None)
                changed.append(key)
                continue
            merged = tuple(sorted(e for j in providers for e in self.offers[j][name]))
            if merged != self.endpoints.get(key):
                self.endpoints[key] = merged
                self.index[key] = index
                changed.append(key)
        if changed:
            self.last_index = index
        return changed

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
        then [["", "", last_index]] when the latest change removed a service."""
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
