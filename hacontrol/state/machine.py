"""The replicated state machine: the façade the Raft bridge, the API and the scheduler use.

`apply(command_bytes, index)` is a pure function of the current state and the command: no
clock, no randomness, no I/O, and it never raises. Every handler checks everything first and
mutates only once the whole command is known to succeed, so a rejected command leaves no
trace except in the idempotency table. The parts: `store` (tables and indexes), `dispatch`
(idempotency, then the handler), `handlers/` (one module per concern), `views` (answers),
`snapshot` (encoding), `events` (the recent event buffer).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

from hacontrol.model.acl import Policy, Token
from hacontrol.model.errors import Rejection, invalid
from hacontrol.model.records import Allocation, Job, Node
from hacontrol.model.resources import Quota, Usage

from . import commands as C
from . import snapshot as snap
from . import views
from .dispatch import IdempotencyTable, apply_command
from .events import EVENTS_KEPT, EventLog
from .prepare import Preparer, body_key, dispose, restore_body
from .store import DEFAULT_NAMESPACE, Store

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_NAMESPACE", "EVENTS_KEPT", "Result", "StateMachine"]

Result = dict[str, Any]


class StateMachine:
    def __init__(self) -> None:
        self.store = Store()
        self.idem = IdempotencyTable()
        self.event_log = EventLog()
        self.broken: str | None = None
        # Called after every applied entry (on the applying thread); never part of the state.
        self.on_applied: Callable[[int, C.Command | None], None] | None = None
        # Test-only planted fault (see hacontrol/planted.py); None in every real deployment.
        self.planted_quota_skip: Callable[[], bool] | None = None
        # Restores' states decoded ahead of their entries (prepare.py); never the state.
        self.preparer = Preparer()
        self._held: tuple[int, int, bytes | None, str, str | None] | None = None

    # ------------------------------------------------------------------ tables

    @property
    def namespaces(self) -> dict[str, Quota]:
        return self.store.namespaces

    @property
    def jobs(self) -> dict[tuple[str, str], Job]:
        return self.store.jobs

    @property
    def allocs(self) -> dict[str, Allocation]:
        return self.store.allocs

    @property
    def nodes(self) -> dict[str, Node]:
        return self.store.nodes

    @property
    def index(self) -> int:
        return self.store.index

    @property
    def alloc_seq(self) -> int:
        return self.store.alloc_seq

    @property
    def usage(self) -> dict[str, tuple[int, int, int]]:
        return self.store.usage

    @property
    def acl_policies(self) -> dict[str, Policy]:
        return self.store.acl_policies

    @property
    def acl_tokens(self) -> dict[str, Token]:
        return self.store.acl_tokens

    @property
    def acl_bootstrapped(self) -> bool:
        return self.store.acl_bootstrapped

    @property
    def controller_credential(self) -> str | None:
        return self.store.controller_credential

    @property
    def on_node(self) -> dict[str, dict[str, None]]:
        """Allocation ids by node (an index; read only)."""
        return self.store.by_node

    @property
    def events(self) -> deque[dict[str, Any]]:
        return self.event_log.buffer

    # ------------------------------------------------------------------ apply

    def apply(self, raw: bytes, index: int) -> Result:
        self.store.index = max(self.store.index, index)
        cmd: C.Command | None = None
        try:
            cmd = C.decode(raw)
            if cmd.op == C.GROUP:
                result = self._apply_group(cmd, index)
            else:
                result = apply_command(self.store, self.event_log, self.idem, cmd, index,
                                       self.planted_quota_skip, self.preparer.take)
            if self.store.retired:  # what a restore replaced is freed off the apply lock
                retired, self.store.retired = self.store.retired, []
                dispose(retired)
                del retired
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

    def ready_to_apply(self, raw: bytes, index: int,
                       wake: Callable[[], None] | None = None) -> bool:
        """Whether applying entry `index` now is quick: False for a restore whose state is
        still being decoded (this starts decoding it; `wake` is called once it is ready).
        Asked by the Raft thread, again and again while it holds the entry back."""
        try:
            held = self._held
            if held is None or held[:2] != (index, len(raw)):
                body, idem = restore_body(raw)
                held = self._held = (index, len(raw), body, body_key(body) if body else "",
                                     idem)
            body, key, idem = held[2], held[3], held[4]
            # A repeat of a restore already applied is answered from the idempotency table
            # (this thread is the table's only writer): nothing to decode.
            replayed = idem is not None and self.idem.get(idem) is not None
            return body is None or replayed or self.preparer.want(body, key, wake)
        except Exception:  # e.g. no thread to be had: then apply decodes it inline
            log.exception("preparing entry %d failed; it applies as it is", index)
            return True

    def preparing(self) -> bool:
        """Whether a restore's state is being decoded here now."""
        return self.preparer.busy()

    def prepare_restore(self, body: bytes, done: Callable[[str], None] | None = None) -> None:
        """Start decoding a restore's state (a peer is about to propose it); `done(key)`
        once it is decoded."""
        key = body_key(body)
        wake = (lambda: done(key)) if done is not None else None
        if self.preparer.want(body, key, wake) and done is not None:
            done(key)

    def prepared_by(self, peer: str, key: str) -> None:
        """`peer` has decoded the restore's state `key` (it says)."""
        self.preparer.ack(key, peer)

    def _apply_group(self, group: C.Command, index: int) -> Result:
        """Each command of a `GROUP` entry in order, as if each were an entry of its own at
        `index`: a refused one refuses only itself."""
        results: list[Result] = []
        for raw in C.group_members(group.args):
            try:
                cmd = C.decode(raw)
                if cmd.op == C.GROUP:
                    raise invalid("op", "a group may not hold a group")
                results.append(apply_command(self.store, self.event_log, self.idem, cmd,
                                             index, self.planted_quota_skip,
                                             self.preparer.take))
            except Rejection as rej:
                results.append({"ok": False, "error": rej.to_dict(), "index": index})
        return {"ok": True, "index": index, "results": results}

    # ------------------------------------------------------------------ events

    def add_event(self, event: dict[str, Any]) -> None:
        """Add an event that is not derived from the log (e.g. the leader's notes)."""
        self.event_log.add(event)

    def events_since(self, index: int, seq: int = -1, limit: int = 1000,
                     kinds: set[str] | None = None) -> list[dict[str, Any]]:
        return self.event_log.since(index, seq, limit, kinds)

    # ------------------------------------------------------------------ reads

    def job_allocs(self, job: Job) -> list[Allocation]:
        return self.store.job_allocs(job)

    def node_allocs(self, name: str) -> list[Allocation]:
        return self.store.node_allocs(name)

    def pending_allocs(self) -> list[Allocation]:
        return self.store.pending_allocs()

    def pending_by_job(self) -> Mapping[tuple[str, str], Collection[str]]:
        """Ids of the allocations waiting for a node, by job; read only."""
        return self.store.pending

    def node_free(self, node: Node) -> tuple[float, int]:
        return self.store.node_free(node)

    def namespace_usage(self, ns: str) -> Usage:
        return self.store.namespace_usage(ns)

    def recompute_usage(self) -> dict[str, tuple[int, int, int]]:
        return self.store.recompute_usage()

    def namespace_view(self, ns: str) -> dict[str, Any]:
        return views.namespace_view(self.store, ns)

    def node_view(self, node: Node) -> dict[str, Any]:
        return views.node_view(self.store, node)

    def job_counts(self, job: Job) -> dict[str, int]:
        return views.job_counts(self.store, job)

    def job_view(self, job: Job) -> dict[str, Any]:
        """The job as reads show it: its status says `failed` when its work failed."""
        return views.read_view(self.store, job)

    def job_status(self, job: Job) -> str:
        return views.job_status(self.store, job)

    @staticmethod
    def alloc_view(a: Allocation) -> dict[str, Any]:
        return views.alloc_view(a)

    def node_assignments(self, node_name: str) -> list[dict[str, Any]]:
        """What an agent must run (and stop) now, in its wire encoding."""
        return [a.to_dict() for a in views.assignments(self.store, node_name)]

    # -------------------------------------------------------------- snapshots

    def snapshot(self) -> bytes:
        return snap.encode(self.store, self.idem)

    def restore(self, data: bytes) -> None:
        """Replace the whole state; raises on a malformed snapshot, leaving it unchanged."""
        self.store, self.idem = snap.decode(data)
        self.broken = None

    def digest(self) -> str:
        """A fingerprint of the state, for comparing replicas."""
        return hashlib.sha256(self.snapshot()).hexdigest()
