"""Applying one decoded command: the idempotency table, then the operation's handler."""

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
from .store import Store

IDEMPOTENCY_KEYS_KEPT = 10_000


def request_digest(op: str, args: dict[str, object]) -> str:
    return hashlib.sha256(msgpack.packb([op, args], use_bin_type=True)).hexdigest()[:32]


class IdempotencyTable:
    """key -> (request digest, result), FIFO-evicted so every replica forgets the same
    keys at the same entry."""

    def __init__(self, kept: int = IDEMPOTENCY_KEYS_KEPT) -> None:
        self.kept = kept
        self.entries: OrderedDict[str, tuple[str, Result]] = OrderedDict()

    def get(self, key: str) -> tuple[str, Result] | None:
        return self.entries.get(key)

    def put(self, key: str, digest: str, result: Result) -> None:
        self.entries[key] = (digest, result)
        while len(self.entries) > self.kept:
            self.entries.popitem(last=False)

    def __iter__(self) -> Iterator[tuple[str, str, Result]]:
        for k, (d, r) in self.entries.items():
            yield k, d, r

    def __len__(self) -> int:
        return len(self.entries)


def apply_command(store: Store, events: EventLog, idem: IdempotencyTable, cmd: C.Command,
                  index: int, planted_quota_skip: Callable[[], bool] | None = None) -> Result:
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
            return dict(seen[1], replayed=True)
    tx = Applying(store, events, index, cmd.ts, planted_quota_skip, cmd.acc)
    try:
        data = HANDLERS[cmd.op](tx, cmd.args)
        result: Result = {"ok": True, "index": index, **data}
    except Rejection as rej:
        result = {"ok": False, "error": rej.to_dict(), "index": index}
        if rej.code == "quota_exceeded":
            tx.event("quota_rejected", op=cmd.op,
                     namespace=cmd.args.get("namespace", cmd.args.get("name")),
                     job=cmd.args.get("name"), message=rej.message)
    if cmd.idem is not None:
        idem.put(cmd.idem, digest, result)
    return result
