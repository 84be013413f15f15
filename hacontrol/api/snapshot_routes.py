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
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from hacontrol.acl.authorize import Action
from hacontrol.model.errors import Rejection, invalid
from hacontrol.state import backup
from hacontrol.state import commands as C
from hacontrol.state import snapshot as snap
from hacontrol.state.dispatch import IdempotencyTable
from hacontrol.state.machine import StateMachine

from .auth import require
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
    ok={"type": "object", "properties": {"index": {"type": "integer"},
                                         "restored": {"type": "object"}}},
    write=True, errors=WRITE_ERRORS,
    description="The body is a file written by GET /v1/operator/snapshot "
                "(application/octet-stream). A damaged file is refused (422, field "
                "`snapshot`) before anything is written. Agents reconcile to the restored "
                "state: allocations it does not know are stopped, missing ones started. "
                "Needs acl:write and operator:write (management)."))
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
    res = await store_of(request).write(C.STATE_RESTORE, args, idem_key(request))
    return web.json_response({"index": res["index"], "restored": res["restored"],
                              "snapshot": found.summary()})


def register(app: web.Application) -> None:
    app.router.add_get("/v1/operator/snapshot", save)
    app.router.add_put("/v1/operator/snapshot", restore)
