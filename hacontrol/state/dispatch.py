"""Applying one decoded command: the idempotency table, then the operation's handler.

The table answers a retried request (same key, same request) with the first answer
without applying it again. It keeps a compact copy of each result, never a whole job spec
(a spec may be 1 MiB): a job view keeps everything but its spec, and a replay takes the spec
back from the job's version history, so the answer is the first one, byte for byte, while
that version is still kept; after that the answer is the view without its spec (name,
version, count, status...: what the CLI reads). Every replica keeps and forgets the same
entries at the same log index: sizes are measured on the msgpack encoding, which is the same
everywhere.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

import msgpack

from hacontrol.model.errors import Rejection, conflict

from . import commands as C
from .context import Applying, Result
from .events import EventLog
from .handlers import HANDLERS
from .permit import check_command
from .services import refresh
from .store import Store

IDEMPOTENCY_KEYS_KEPT = 10_000
# At most this much in all, measured as msgpack; compact entries are about 300 bytes, so the
# key count is what binds in practice and this only guards against large results.
IDEMPOTENCY_BYTES_KEPT = 8 * 1024 * 1024
# A compact result larger than this keeps only its scalar fields (plans list every
# placement; they are proposed by the leader, which never retries them with the same key).
RESULT_BYTES_KEPT = 4096
# What the table keeps of a job view: all but the spec (plus the count, which `job_scale`
# changes without a new version), in the view's own order.
# The objects write routes answer with (`res["job"]`...): a compacted result keeps them.
ANSWERED_OBJECTS = ("job", "node", "namespace", "error")
JOB_REFERENCE = ("namespace", "name", "count", "version", "status", "created_at", "updated_at",
                 "modify_index", "deployment", "counts")


def request_digest(op: str, args: dict[str, object]) -> str:
    return hashlib.sha256(msgpack.packb([op, args], use_bin_type=True)).hexdigest()[:32]


def compact_result(result: Result) -> Result:
    """What the table keeps of `result`: job views shrunk to `JOB_REFERENCE`, and only the
    scalar fields of anything still over `RESULT_BYTES_KEPT`. Compacting twice changes
    nothing, so a snapshot's entries can be compacted again on restore."""
    return _compact_packed(result)[0]


def _compact_packed(result: Result) -> tuple[Result, bytes]:
    """`compact_result` and its msgpack encoding (packed once: the table keeps it)."""
    out = dict(result)
    job = out.get("job")
    if isinstance(job, dict):
        out["job"] = {k: job[k] for k in JOB_REFERENCE if k in job}
    packed: bytes = msgpack.packb(out, use_bin_type=True)
    if len(packed) > RESULT_BYTES_KEPT:
        node = out.get("node")
        out = {k: v for k, v in out.items()
               if k in ANSWERED_OBJECTS or not isinstance(v, list | dict)}
        if isinstance(node, dict):  # labels and attributes are what can make a node large
            out["node"] = {k: v for k, v in node.items() if k not in ("labels", "attributes")}
        out["compacted"] = True
        packed = msgpack.packb(out, use_bin_type=True)
    return out, packed


def replayed_result(store: Store, kept: Result) -> Result:
    """The answer to a retried request: the kept result, its job view made whole again
    from the job's version history when that version is still kept."""
    out = dict(kept, replayed=True)
    ref = kept.get("job")
    if isinstance(ref, dict):
        job = store.jobs.get((str(ref.get("namespace")), str(ref.get("name"))))
        kept_version = next((v for v in job.history if v.version == ref.get("version")),
                            None) if job is not None else None
        count = ref.get("count")
        if kept_version is not None and isinstance(count, int):
            spec = kept_version.spec.with_count(count).to_dict()
            out["job"] = {"namespace": ref["namespace"], "name": ref["name"], **spec,
                          **{k: v for k, v in ref.items() if k not in spec
                             and k not in ("namespace", "name")}}
    return out


class IdempotencyTable:
    """key -> (request digest, compact result), FIFO-evicted by count and by bytes, so
    every replica forgets the same keys at the same entry."""

    def __init__(self, kept: int = IDEMPOTENCY_KEYS_KEPT,
                 bytes_kept: int = IDEMPOTENCY_BYTES_KEPT) -> None:
        self.kept = kept
        self.bytes_kept = bytes_kept
        self.bytes = 0
        # key -> (request digest, kept result, msgpack of [key, digest, kept]): the packed
        # form is needed for the byte bound anyway, and a snapshot reuses it instead of
        # packing 10,000 entries again on the tick thread (snapshot.encode).
        self.entries: OrderedDict[str, tuple[str, Result, bytes]] = OrderedDict()

    def get(self, key: str) -> tuple[str, Result] | None:
        entry = self.entries.get(key)
        return None if entry is None else (entry[0], entry[1])

    def put(self, key: str, digest: str, result: Result) -> None:
        kept, packed_kept = _compact_packed(result)
        # msgpack's array of three is its header and the three encodings, one after the
        # other: the same bytes as packing [key, digest, kept], without packing kept again.
        packed = b"\x93" + msgpack.packb(key, use_bin_type=True) \
            + msgpack.packb(digest, use_bin_type=True) + packed_kept
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old[2])
        self.entries[key] = (digest, kept, packed)
        self.bytes += len(packed)
        while len(self.entries) > self.kept or self.bytes > self.bytes_kept:
            _, (_, _, dropped) = self.entries.popitem(last=False)
            self.bytes -= len(dropped)

    def __iter__(self) -> Iterator[tuple[str, str, Result]]:
        for k, (d, r, _) in self.entries.items():
            yield k, d, r

    def packed(self) -> Iterator[bytes]:
        """Each entry as msgpack [key, digest, result], oldest first (as `__iter__`)."""
        for _, _, raw in self.entries.values():
            yield raw

    def __len__(self) -> int:
        return len(self.entries)


def apply_command(store: Store, events: EventLog, idem: IdempotencyTable, cmd: C.Command,
                  index: int, planted_quota_skip: Callable[[], bool] | None = None,
                  prepared: Callable[[bytes], object] | None = None) -> Result:
    """The result of `cmd`; raises `Rejection` only for a reused idempotency key (the
    caller turns it into a result). A handler's rejection is recorded under the key; an
    access refusal is not (it is about who asked, and a retry with a valid token must
    apply), and comes before any replay (a refused token learns nothing of a result)."""
    refused = check_command(store, cmd)
    if refused is not None:
        return {"ok": False, "error": refused.to_dict(), "index": index}
    digest = ""
    if cmd.idem is not None:
        digest = request_digest(cmd.op, cmd.args)
        seen = idem.get(cmd.idem)
        if seen is not None:
            if seen[0] != digest:
                raise conflict("idempotency key was already used for a different request",
                               "Idempotency-Key")
            return replayed_result(store, seen[1])
    tx = Applying(store, events, index, cmd.ts, planted_quota_skip, cmd.acc, prepared)
    try:
        data = HANDLERS[cmd.op](tx, cmd.args)
        result: Result = {"ok": True, "index": index, **data}
    except Rejection as rej:
        result = {"ok": False, "error": rej.to_dict(), "index": index}
        if rej.code == "quota_exceeded":
            tx.event("quota_rejected", op=cmd.op,
                     namespace=cmd.args.get("namespace", cmd.args.get("name")),
                     job=cmd.args.get("name"), message=rej.message)
    # The registry and the tally follow what the entry changed (derived here, never written
    # directly).
    store.tally.refresh(store.allocs, cmd.ts)
    for ns, name in refresh(store, index):
        tx.event("service_updated", namespace=ns, service=name,
                 endpoints=len(store.registry.endpoints.get((ns, name), ())))
    if cmd.idem is not None:
        idem.put(cmd.idem, digest, result)
    return result
