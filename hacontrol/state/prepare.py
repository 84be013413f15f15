"""Decoding a restore's state before its log entry applies, on a thread of its own.

Inflating, unpacking and decoding the state of a `state_restore` takes each replica 1-4 s
at 10,000 jobs. Done inside apply, that held the apply lock (which every request's token
check and every read wait for) and the Raft thread (heartbeats, acknowledgements) as long:
client requests paused 10-15 s under load. Now `Preparer` decodes it on its own thread,
started as soon as the state is known: by the replica that proposes it (before it
proposes, `api/snapshot_routes.py`), by its peers when the proposer hands them the body
(`raft/prepare_gate.py`), and at the latest when the entry is next to apply; the Raft
thread holds back that entry (not the others' messages) until its state is ready. The
handler (`handlers/restore.py`) then only takes the decoded store and swaps it in.

`decode_restore` is a pure function of the deflated body, so every replica still reaches
the same state at the same entry, or refuses it with the same rejection, whether the body
was decoded here or inline (apply decodes inline when nothing was prepared, e.g. when a
replica replays its journal). A decoded store is handed out once (`take`): the one that
was adopted is mutated by later entries, and must never be adopted again.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack

from hacontrol.model.errors import Rejection, invalid

from . import commands as C
from .backup import COUNTED, DamagedSnapshot, counts_of, inflate
from .store import Store
from .tables import decode_store, paused_gc

log = logging.getLogger(__name__)

# The decoded store and its row counts, or why the state is refused.
Outcome = tuple[Store, dict[str, int]] | Rejection
# Decoded states kept at once: one restore in progress and one proposed behind it (a
# 10,000-job store is a few hundred MB of objects).
KEPT = 2
# A decoded state nobody took within this long is dropped (its entry never came: the
# proposer failed before proposing, or the entry was answered from the idempotency table).
UNUSED_KEEP_S = 300.0
# After its own decode, the proposer waits at most this long for its peers to say they
# have decoded theirs: a peer still decoding when the entry commits holds it back, and its
# reads and the writes sent through it wait meanwhile (0.3-0.5 s measured without this).
PEERS_WAIT_S = 5.0
RESHARE_S = 1.0
# The snapshot map's tables that hold one row per element.
_ROWS = frozenset({"namespaces", "jobs", "allocs", "nodes", "idempotency", "acl_policies",
                   "acl_tokens", "alert_rules", "alert_states", "services"})


# A decode off the Raft thread works this long, then rests as long: the process's other
# threads (Raft's tick, the event loop) get the GIL and the CPU at once, instead of after
# their share of a 2-core machine where every replica decodes at the same time (without
# rests, followers missed heartbeats for 0.3 s and more, and elections followed).
WORK_S = 0.004
REST_S = 0.004


class Pace:
    """Rests its thread `rest_s` after every `work_s` of work, checked every few rows."""

    def __init__(self, work_s: float = WORK_S, rest_s: float = REST_S) -> None:
        self.work_s, self.rest_s = work_s, rest_s
        self.since = time.perf_counter()

    def step(self) -> None:
        if time.perf_counter() - self.since >= self.work_s:
            time.sleep(self.rest_s)
            self.since = time.perf_counter()

    def rows(self, rows: Iterable[Any]) -> Iterator[Any]:
        for n, row in enumerate(rows):
            if not n & 15:
                self.step()
            yield row


def body_key(body: bytes) -> str:
    """What a prepared state is found by: the SHA-256 of the deflated body."""
    return hashlib.sha256(body).hexdigest()


def restore_body(raw: bytes) -> tuple[bytes | None, str | None]:
    """The deflated state a command carries when it is a `state_restore` (else None), and
    its idempotency key."""
    try:
        cmd = C.decode(raw)
    except Rejection:
        return None, None
    body = cmd.args.get("state") if cmd.op == C.STATE_RESTORE else None
    return body if isinstance(body, bytes) else None, cmd.idem


def unpack_state(raw: bytes, pace: Pace | None = None) -> Any:
    """`msgpack.unpackb(raw, raw=False, strict_map_key=True)`, one row at a time: another
    thread gets the GIL between rows (one call for 10,000 jobs holds it 0.3-0.5 s, a pause
    of every request). A state shaped otherwise than a map of tables is left to `unpackb`
    itself, so a malformed one fails exactly as it did."""
    try:
        return _unpack_rows(raw, pace)
    except Exception:  # msgpack raises several unrelated types on garbage
        pass
    return msgpack.unpackb(raw, raw=False, strict_map_key=True)


def _unpack_rows(raw: bytes, pace: Pace | None) -> dict[str, Any]:
    unpacker = msgpack.Unpacker(None, raw=False, strict_map_key=True,
                                max_buffer_size=max(len(raw), 1))
    unpacker.feed(raw)
    out: dict[str, Any] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if not isinstance(key, str):
            raise ValueError("not a table name")
        if key in _ROWS:
            count = unpacker.read_array_header()
            out[key] = [unpacker.unpack() for _ in (pace.rows(range(count)) if pace
                                                    else range(count))]
        else:
            out[key] = unpacker.unpack()
    if unpacker.tell() != len(raw):
        raise ValueError("extra data")
    return out


def decode_restore(body: bytes, pace: Pace | None = None) -> Outcome:
    """The store a restore's deflated state decodes to (indexes and registry built) and its
    row counts, or the rejection saying why it cannot be restored. `pace`: rest now and
    then (only off the Raft thread)."""
    try:
        with paused_gc():
            tables = unpack_state(inflate(body), pace)
            store = decode_store(tables, pace.rows if pace else iter)
            # Millions of long-lived objects: once collection resumes, each generation's
            # first walk over them held the GIL 0.2-0.6 s (at 10,000 jobs), three times,
            # long enough for a follower to miss its heartbeats. Frozen, the collector
            # never walks them; they are still freed by their reference counts. (So is
            # everything else alive now: a cycle among those that becomes garbage later
            # is never collected, a small leak for an operation as rare as a restore.)
            gc.freeze()
    except DamagedSnapshot as exc:
        return invalid("state", str(exc))
    except Exception as exc:  # a malformed snapshot raises whatever its field breaks
        return invalid("state", f"the snapshot does not decode: {type(exc).__name__}: "
                                f"{exc}"[:300])
    counts = counts_of(tables)
    held = {"namespaces": len(store.namespaces), "jobs": len(store.jobs),
            "allocations": len(store.allocs), "nodes": len(store.nodes),
            "tokens": len(store.acl_tokens), "policies": len(store.acl_policies)}
    for name, _ in COUNTED:
        if held[name] != counts[name]:
            return invalid("state", f"the snapshot names some of its {name} twice")
    return store, held


def dispose(tables: list[object]) -> None:
    """Free tables a restore replaced on a thread of their own, one record at a time (a
    whole table freed at once holds the GIL until the last record is gone)."""
    threading.Thread(target=_free, args=(tables,), daemon=True, name="restore-free").start()


def _free(tables: list[object]) -> None:
    while tables:
        table = tables.pop()
        # A copy of the records: the table itself may be shared (never changed here).
        rows = list(table.values()) if isinstance(table, dict) else []
        del table
        while rows:
            rows.pop()


@dataclass
class _Slot:
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    wakes: list[Callable[[], None]] = field(default_factory=list)
    done_at: float = 0.0


class Preparer:
    """Restores' states being decoded or decoded, by `body_key`; thread-safe."""

    def __init__(self, kept: int = KEPT, unused_keep_s: float = UNUSED_KEEP_S) -> None:
        self.kept = kept
        self.unused_keep_s = unused_keep_s
        self._lock = threading.Lock()
        self._slots: OrderedDict[str, _Slot] = OrderedDict()
        # Set by the controller: hands a body to the peers, so they decode it too, and
        # says to how many.
        self.share: Callable[[bytes], int] | None = None
        # body key -> the peers that said they decoded it (`ack`).
        self._acks: OrderedDict[str, set[str]] = OrderedDict()
        self._acked = threading.Condition(self._lock)

    def want(self, body: bytes, key: str | None = None,
             wake: Callable[[], None] | None = None) -> bool:
        """Start decoding `body` unless it is being (or was) decoded; whether it is ready.
        `wake` is called once it is, when it is not yet."""
        key = key or body_key(body)
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                if not slot.done.is_set() and wake is not None and wake not in slot.wakes:
                    slot.wakes.append(wake)
                return slot.done.is_set()
            slot = self._slots[key] = _Slot(wakes=[wake] if wake is not None else [])
            while len(self._slots) > self.kept:
                self._slots.popitem(last=False)  # its thread finishes and drops it
        threading.Thread(target=self._run, args=(body, slot), daemon=True,
                         name="restore-prepare").start()
        return False

    def _run(self, body: bytes, slot: _Slot) -> None:
        try:
            slot.outcome = decode_restore(body, Pace())
        except BaseException:  # never here by design; apply then decodes inline
            log.exception("decoding a restore's state failed")
        with self._lock:
            slot.done_at = time.monotonic()
            slot.done.set()
            wakes, slot.wakes = slot.wakes, []
        for wake in wakes:
            try:
                wake()
            except Exception:
                log.exception("waking the applier failed")

    def wait(self, body: bytes, timeout: float, peers_wait: float = PEERS_WAIT_S) -> bool:
        """Hand `body` to the peers, decode it here and wait for it (blocking, at most
        `timeout` seconds), then for the peers to have decoded theirs (at most
        `peers_wait` more); whether it is ready here. The proposer calls this before it
        proposes the restore."""
        peers = self._share(body)
        key = body_key(body)
        self.want(body, key)
        with self._lock:
            slot = self._slots.get(key)
        ready = slot is None or slot.done.wait(timeout)
        deadline = time.monotonic() + peers_wait
        while True:
            with self._lock:
                left = deadline - time.monotonic()
                if self._acked.wait_for(lambda: len(self._acks.get(key, ())) >= peers,
                                        min(max(left, 0.0), RESHARE_S)) or left <= 0:
                    return ready
            # A link that was down (a follower's to another follower is opened lazily)
            # dropped the body: hand it again to all (one that has it answers at once).
            self._share(body)

    def _share(self, body: bytes) -> int:
        if self.share is None:
            return 0
        try:
            return self.share(body)
        except Exception:
            log.exception("handing a restore's state to the peers failed")
            return 0

    def ack(self, key: str, peer: str) -> None:
        """`peer` says it has decoded the body `key`."""
        with self._lock:
            self._acks.setdefault(key, set()).add(peer)
            while len(self._acks) > self.kept:
                self._acks.popitem(last=False)
            self._acked.notify_all()

    def take(self, body: bytes) -> Outcome | None:
        """The outcome decoded for `body`, handed out once; None when it is not ready
        (the caller decodes inline: a slot still running is dropped)."""
        with self._lock:
            slot = self._slots.pop(body_key(body), None)
        if slot is None or not slot.done.is_set():
            return None
        return slot.outcome

    def busy(self) -> bool:
        """Whether a state is being decoded now (asked on every Raft tick, which also
        drops the decoded states nobody took for `UNUSED_KEEP_S`)."""
        now = time.monotonic()
        with self._lock:
            for key, slot in list(self._slots.items()):
                if slot.done.is_set() and now - slot.done_at > self.unused_keep_s:
                    del self._slots[key]
            return any(not slot.done.is_set() for slot in self._slots.values())

    def peek(self, body: bytes) -> Outcome | None:
        """The outcome decoded for `body` when it is ready, left in place."""
        with self._lock:
            slot = self._slots.get(body_key(body))
        return slot.outcome if slot is not None and slot.done.is_set() else None

    def __len__(self) -> int:
        return len(self._slots)
