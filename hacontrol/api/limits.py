"""Caps on what the API accepts: request body size and how many jobs, namespaces and nodes
the cluster holds (`hacontrol server --max-*`).

The counts are checked against this replica's applied state before a command that would
create something is proposed, so they hold for everything that comes through the API (a
burst of concurrent creations on several replicas can pass a cap by the few in flight).
The state machine itself knows no caps: they are configuration, which replicas need not
share, while everything the state machine decides must be the same on every replica.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from hacontrol.model.errors import Rejection
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .backend import Store

T = TypeVar("T")

LIMIT_EXCEEDED = "limit_exceeded"


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024  # a job spec may be up to 1 MiB
    max_jobs: int = 10_000
    max_namespaces: int = 1_000
    max_nodes: int = 5_000


def _over(limits: Limits, op: str, args: dict[str, Any]
          ) -> Callable[[StateMachine], Rejection | None]:
    def check(m: StateMachine) -> Rejection | None:
        if op == C.JOB_PUT:
            key = (args.get("namespace"), args.get("name"))
            if key not in m.jobs and len(m.jobs) >= limits.max_jobs:
                return Rejection(LIMIT_EXCEEDED, f"the cluster already holds the most jobs it "
                                 f"accepts ({limits.max_jobs})", "name")
        elif op == C.NS_PUT:
            if args.get("name") not in m.namespaces \
                    and len(m.namespaces) >= limits.max_namespaces:
                return Rejection(LIMIT_EXCEEDED, f"the cluster already holds the most "
                                 f"namespaces it accepts ({limits.max_namespaces})",
                                 "namespace")
        elif op == C.NODE_REGISTER:
            if args.get("name") not in m.nodes and len(m.nodes) >= limits.max_nodes:
                return Rejection(LIMIT_EXCEEDED, f"the cluster already holds the most nodes "
                                 f"it accepts ({limits.max_nodes})", "node.name")
        return None
    return check


class LimitedStore:
    """A `Store` that refuses, with `limit_exceeded` naming the field, a write that would
    create a job, namespace or node beyond `limits`; everything else passes through."""

    def __init__(self, store: Store, limits: Limits) -> None:
        self.store = store
        self.limits = limits

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    *, actor: str | None = None) -> dict[str, Any]:
        if op in (C.JOB_PUT, C.NS_PUT, C.NODE_REGISTER):
            rejection = self.store.read_local(_over(self.limits, op, args))
            if rejection is not None:
                raise rejection
        return await self.store.write(op, args, idem, actor=actor)

    async def read(self, fn: Callable[[StateMachine], T], stale: bool = False) -> T:
        return await self.store.read(fn, stale)

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        return self.store.read_local(fn)

    async def wait_changed(self, timeout: float) -> None:
        await self.store.wait_changed(timeout)
