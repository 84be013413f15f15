"""Backups: `GET /v1/operator/snapshot` saves the whole state to a file, `PUT` restores one.

Both need a token that may write the ACLs and operate the cluster (a management token, or
a policy granting `acl: write` and `operator: write`): a snapshot holds every token's
secret hash, every policy and every job's environment in every namespace, and restoring
one replaces every token, so either is as much as management.

A save is a linearizable read (on the leader a ReadIndex round, on a follower a no-op
through the log), so the file holds every write acknowledged before the request, at the
log index its header names. A restore is one log entry (`state_restore`): every replica
replaces its state at the same index, or none does; the file is verified here first (and
again by every replica as it applies), so a damaged file never reaches the log.

A restore of 10,000 jobs can outlive a client's 5 s write deadline (every replica decodes
the state for a second or more, off its apply lock: `state/prepare.py`; and the write may
wait for an election). The route answers within
`ANSWER_WITHIN_S` either way: the result, or `202` with a receipt while the restore goes on
here. `GET /v1/operator/snapshot/restore/{receipt}` then answers (again within
`ANSWER_WITHIN_S`) with the result or another 202. The receipt is a secret handed only to
the request that started the restore, and it is the only thing the poll needs: the restore
may have replaced the very token that asked for it. A repeat of the request with the same
Idempotency-Key joins the restore in progress instead of proposing it again.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from hacontrol.acl.authorize import Action
from hacontrol.controller.errors import NotApplied, OutcomeUnknown
from hacontrol.model.errors import Rejection, invalid
from hacontrol.state import backup
from hacontrol.state import commands as C
from hacontrol.state import snapshot as snap
from hacontrol.state.dispatch import IdempotencyTable, request_digest
from hacontrol.state.machine import StateMachine

from .auth import require
from .backend import Store
from .errors import RequestError
from .limits import LIMIT_EXCEEDED, LimitedStore
from .openapi import WRITE_ERRORS, Operation, documented
from .request import STORE, cluster_of, idem_key, store_of

# The deflated state travels in one log entry, whose whole envelope must stay under what
# every replica decodes (`commands.MAX_COMMAND_BYTES`, also the replicas' submission cap).
MAX_RESTORE_BODY_BYTES = C.MAX_COMMAND_BYTES - 64 * 1024
# A file is its body plus a header of a few hundred bytes and the checksum.
MAX_FILE_BYTES = MAX_RESTORE_BODY_BYTES + backup.MAX_HEADER_BYTES + 1024
CHUNK_BYTES = 256 * 1024
SUMMARY = {"type": "object", "properties": {
    "index": {"type": "integer"}, "term": {"type": "integer"}, "size": {"type": "integer"},
    "counts": {"type": "object", "additionalProperties": {"type": "integer"}}}}


# The route (and each poll) answers within this, under a client's 5 s write deadline.
ANSWER_WITHIN_S = 4.0
# A restore whose deflated state is this large (10,000 jobs: ~0.5 MB) is answered 202 at
# once (see `restore`); smaller ones usually apply within ANSWER_WITHIN_S.
ACCEPT_AT_ONCE_BYTES = 64 * 1024
# How long a restore may take here in all: every replica decodes the whole state, and the
# entry may wait for an election first.
RESTORE_APPLY_S = 120.0
# How long the proposer waits for its own decode of the state before proposing.
PREPARE_WAIT_S = 60.0
# After an unknown outcome, how long to wait for the entry to apply here before proposing
# it again (the same command under the same key).
WAIT_APPLIED_S = 10.0
# Finished restores are remembered this long (a lost answer is asked again), at most
# KEPT_RESTORES of them.
KEEP_FINISHED_S = 600.0
KEPT_RESTORES = 16
RESULT = {"type": "object", "properties": {"index": {"type": "integer"},
                                           "restored": {"type": "object"},
                                           "snapshot": SUMMARY}}
PENDING = {"type": "object", "properties": {
    "pending": {"type": "boolean"}, "receipt": {"type": "string"},
    "poll": {"type": "string"}, "message": {"type": "string"}}}


@dataclass
class _Restore:
    key: str
    digest: str
    receipt: str
    task: asyncio.Task[dict[str, Any]]
    summary: dict[str, Any]
    finished_at: float | None = None


class Restores:
    """The restores this replica proposed: by Idempotency-Key and by receipt."""

    def __init__(self) -> None:
        self.by_key: dict[str, _Restore] = {}
        self.by_receipt: dict[str, _Restore] = {}

    def start(self, key: str, digest: str, summary: dict[str, Any],
              run: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> _Restore:
        """The restore under `key`: the one in progress (or done) when the same request
        started it, else a new one running `run()`; 409 for another file. One that failed
        is started again: its failure may have been this replica's (no leader in time),
        and the log applies the key at most once anyway."""
        self._forget_old()
        found = self.by_key.get(key)
        if found is not None and found.task.done() and (
                found.task.cancelled() or found.task.exception() is not None):
            found = None
        if found is not None:
            if found.digest != digest:
                raise Rejection("conflict", "idempotency key was already used for a "
                                "different request", "Idempotency-Key")
            return found
        task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(run())
        entry = _Restore(key, digest, secrets.token_urlsafe(24), task, summary)
        task.add_done_callback(lambda t: self._finished(entry, t))
        self.by_key[key] = self.by_receipt[entry.receipt] = entry
        return entry

    def find(self, receipt: str) -> _Restore | None:
        self._forget_old()
        return self.by_receipt.get(receipt)

    def _finished(self, entry: _Restore, task: asyncio.Task[dict[str, Any]]) -> None:
        entry.finished_at = time.monotonic()
        if not task.cancelled():
            task.exception()  # retrieved: answered to whoever asks next

    def _forget_old(self) -> None:
        now = time.monotonic()
        done = sorted((e.finished_at, e.receipt) for e in self.by_receipt.values()
                      if e.finished_at is not None)
        drop = {r for at, r in done if now - at > KEEP_FINISHED_S}
        drop |= {r for _, r in done[:max(len(done) - KEPT_RESTORES, 0)]}
        for receipt in drop:
            entry = self.by_receipt.pop(receipt)
            if self.by_key.get(entry.key) is entry:
                del self.by_key[entry.key]


RESTORES = web.AppKey[Restores]("restores")


def _take(m: StateMachine) -> tuple[bytes, int, dict[str, int]]:
    # Without the idempotency table: it answers clients' retries of the last few seconds,
    # which a restored cluster keeps its own of (handlers/restore.py), and it was a
    # quarter of the state at 10,000 jobs.
    s = m.store
    counts = {"namespaces": len(s.namespaces), "jobs": len(s.jobs),
              "allocations": len(s.allocs), "nodes": len(s.nodes),
              "tokens": len(s.acl_tokens), "policies": len(s.acl_policies)}
    return snap.encode(s, IdempotencyTable()), s.index, counts


@documented(Operation(
    "Save a snapshot of the whole state (a backup file)", "operator",
    media="application/octet-stream",
    description="A point-in-time copy at the log index and term its header names: every "
                "table, ACL tokens (their secret hashes) and policies included. The file "
                "is checksummed; `hacontrol operator snapshot inspect` reads it. Needs "
                "acl:write and operator:write (management).",
    errors=(401, 403, 503)))
async def save(request: web.Request) -> web.StreamResponse:
    require(request, Action.OPERATOR_WRITE)
    store = store_of(request)
    await store.read(lambda m: None)  # a barrier: every acknowledged write is applied here
    # Encoding 10,000 jobs takes a few hundred ms under the apply lock: off the event loop.
    state, index, counts = await asyncio.to_thread(store.read_local, _take)
    cluster = cluster_of(request)
    data = await asyncio.to_thread(backup.pack, state, index, cluster.term(), counts,
                                   created_at=time.time(), source=cluster.id)
    resp = web.StreamResponse(headers={
        "Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
        "Content-Disposition": f'attachment; filename="hacontrol-{index}.snap"',
        "X-Hacontrol-Index": str(index)})
    await resp.prepare(request)
    for at in range(0, len(data), CHUNK_BYTES):
        await resp.write(data[at:at + CHUNK_BYTES])
    await resp.write_eof()
    return resp


async def _file_body(request: web.Request) -> bytes:
    too_large = RequestError(
        "payload_too_large", f"a snapshot file over {MAX_FILE_BYTES} bytes: its state does "
        f"not fit in one log entry (restore it onto a fresh cluster from fewer jobs, or "
        f"raise the limit)", "body")
    if request.content_length is not None and request.content_length > MAX_FILE_BYTES:
        raise too_large
    buf = bytearray()
    try:
        async for chunk in request.content.iter_chunked(CHUNK_BYTES):
            buf += chunk
            if len(buf) > MAX_FILE_BYTES:
                raise too_large
    except ConnectionResetError:
        raise invalid("body", "the connection closed before the whole file arrived") from None
    if not buf:
        raise invalid("body", "the body must be a snapshot file")
    return bytes(buf)


def _check_caps(request: web.Request, counts: dict[str, int]) -> None:
    """Refuse a snapshot holding more than this cluster accepts (`hacontrol server
    --max-*`): it would restore, and then every creation would be refused."""
    store = request.app[STORE]
    if not isinstance(store, LimitedStore):  # build_app always wraps the store in one
        return
    limits = store.limits
    for name, cap in (("jobs", limits.max_jobs), ("namespaces", limits.max_namespaces),
                      ("nodes", limits.max_nodes)):
        if counts.get(name, 0) > cap:
            raise Rejection(LIMIT_EXCEEDED, f"the snapshot holds {counts[name]} {name}, "
                            f"more than this cluster accepts ({cap}: --max-{name})",
                            "snapshot")


@documented(Operation(
    "Restore a snapshot file: replace the whole state, as one log entry", "operator",
    ok=RESULT, write=True, errors=WRITE_ERRORS, responses={202: PENDING},
    description="The body is a file written by GET /v1/operator/snapshot "
                "(application/octet-stream). A damaged file is refused (422, field "
                "`snapshot`) before anything is written. Agents reconcile to the restored "
                "state: allocations it does not know are stopped, missing ones started. "
                "Needs acl:write and operator:write (management). Answers within 4 s: "
                "the result, or 202 with a `receipt` while the restore goes on; then GET "
                "`poll` on the same replica (no token needed) until it is not 202. The "
                "same request with the same Idempotency-Key joins the restore in "
                "progress."))
async def restore(request: web.Request) -> web.Response:
    require(request, Action.OPERATOR_WRITE)
    data = await _file_body(request)
    try:
        found = backup.unpack(data)
        # Inflating it refuses a body that does not inflate whole before it enters the
        # log. Not decoding it: unpacking 10,000 jobs holds the GIL for a good part of a
        # second, which would stall this replica's Raft thread; every replica checks the
        # decoded state as it applies the entry, and the CLI checks it before sending.
        await asyncio.to_thread(backup.inflated, found)
    except backup.DamagedSnapshot as exc:
        raise invalid("snapshot", str(exc)) from None
    if len(found.body) > MAX_RESTORE_BODY_BYTES:
        raise RequestError("payload_too_large", f"a state of {len(found.body)} deflated "
                           f"bytes does not fit in one log entry ({MAX_RESTORE_BODY_BYTES})",
                           "body")
    _check_caps(request, found.counts)
    args: dict[str, Any] = {"state": found.body, "index": found.index}
    # Every restore has a key: a repeat of it must never restore twice.
    key = idem_key(request) or f"restore-{uuid.uuid4()}"
    store = store_of(request)

    async def run() -> dict[str, Any]:
        # Every replica decodes the state before the entry reaches it (state/prepare.py):
        # this one now, its peers from the body it hands them. Proposed once decoded here
        # (or after PREPARE_WAIT_S anyway: apply then waits for it, never the others).
        preparer = store.read_local(lambda m: m.preparer)
        await asyncio.to_thread(preparer.wait, found.body, PREPARE_WAIT_S)
        return await _restore_once(store, args, key)

    entry = request.app[RESTORES].start(key, hashlib.sha256(data).hexdigest(),
                                        found.summary(), run)
    # A large restore is accepted at once: it is decoded for seconds before it is even
    # proposed, and a client should not hold a connection open for that.
    large = len(found.body) >= ACCEPT_AT_ONCE_BYTES
    return await _answer(entry, 0.0 if large else ANSWER_WITHIN_S)


async def _restore_once(store: Store, args: dict[str, Any], key: str) -> dict[str, Any]:
    """Propose the restore under `key` until this replica knows how it ended, within
    RESTORE_APPLY_S. What it knows is this replica's idempotency table: once the key is
    there the entry applied (and how), whatever a proposal answered. A proposal after the
    first is the same command under the same key, so it never restores twice: the log
    answers it from the table, or refuses it when the restore replaced the token."""
    digest = request_digest(C.STATE_RESTORE, args)
    deadline = time.monotonic() + RESTORE_APPLY_S
    while True:
        try:
            res = await store.write(C.STATE_RESTORE, args, key)
            return {"index": res["index"], "restored": res["restored"]}
        except (Rejection, NotApplied, OutcomeUnknown) as exc:
            kept = await _kept(store, key, min(deadline, time.monotonic() + (
                0.0 if isinstance(exc, Rejection | NotApplied) else WAIT_APPLIED_S)))
            if kept is not None:
                return _outcome(kept, digest)
            if isinstance(exc, Rejection) or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.2)  # a leader to come, before proposing again


async def _kept(store: Store, key: str, until: float) -> tuple[str, dict[str, Any]] | None:
    """`key`'s (digest, result) in this replica's idempotency table, waiting for entries
    to apply until `until`."""
    while True:
        kept = store.read_local(lambda m: m.idem.get(key))
        left = until - time.monotonic()
        if kept is not None or left <= 0:
            return kept
        await store.wait_changed(min(left, 1.0))


def _outcome(kept: tuple[str, dict[str, Any]], digest: str) -> dict[str, Any]:
    found, result = kept
    if found != digest:
        raise Rejection("conflict", "idempotency key was already used for a different "
                        "request", "Idempotency-Key")
    if not result.get("ok"):
        err = result.get("error") or {}
        raise Rejection(err.get("code", "internal"), err.get("message", ""), err.get("field"))
    return {"index": result["index"], "restored": result.get("restored")}


async def _answer(entry: _Restore, within: float | None = None) -> web.Response:
    """The restore's result (or its error) once done within `within` (by default
    ANSWER_WITHIN_S), else 202."""
    within = ANSWER_WITHIN_S if within is None else within
    if within > 0 and not entry.task.done():
        await asyncio.wait({entry.task}, timeout=within)
    if entry.task.done():
        return web.json_response({**entry.task.result(), "snapshot": entry.summary})
    poll = f"/v1/operator/snapshot/restore/{entry.receipt}"
    return web.json_response(
        {"pending": True, "receipt": entry.receipt, "poll": poll,
         "message": "the restore is still being applied: GET the poll path on this replica "
                    "(no token needed) until it answers something else than 202"},
        status=202, headers={"Location": poll, "Retry-After": "1"})


@documented(Operation(
    "How a restore this replica took ended (or 202: still going)", "operator",
    ok=RESULT, public=True, errors=(404, 422, 409, 503), responses={202: PENDING},
    path={"receipt": {"type": "string"}},
    description="The receipt is the secret a 202 answer of PUT /v1/operator/snapshot "
                "gave; it is all this needs (the restore may have replaced the token that "
                "asked for it). Answers within 4 s: the restore's result or error, or 202 "
                "again. 404: no restore with this receipt here (another replica took it, "
                "or this one restarted)."))
async def restore_outcome(request: web.Request) -> web.Response:
    entry = request.app[RESTORES].find(request.match_info["receipt"])
    if entry is None:
        raise RequestError("not_found", "no restore with this receipt on this replica "
                           "(another replica took it, or this one restarted): check the "
                           "state with one of the snapshot's tokens before restoring again",
                           "receipt")
    return await _answer(entry)


def register(app: web.Application) -> None:
    app[RESTORES] = Restores()
    app.router.add_get("/v1/operator/snapshot", save)
    app.router.add_put("/v1/operator/snapshot", restore)
    app.router.add_get("/v1/operator/snapshot/restore/{receipt}", restore_outcome)
