"""state_restore: replace the whole state with a snapshot's, as one log entry.

Every replica inflates and decodes the same bytes at the same place in the log, so every
replica ends with the same state. Everything is checked before anything changes: a body
that does not inflate (or inflates past `backup.MAX_STATE_BYTES`), does not decode, or
holds two rows under one key is refused and the state stays as it was.

What a restore keeps of the state it replaces: the log index (the store's index stays the
log's, so the agents' delta sync sees a restore as a point after which it must send
everything), the allocation id sequence when it is ahead (an id an agent may still run
from before the restore is never handed out again), and the idempotency table (a request
acknowledged before the restore is answered as acknowledged, not applied again after it).
"""

from __future__ import annotations

from typing import Any

import msgpack

from hacontrol.model.errors import invalid

from ..backup import COUNTED, DamagedSnapshot, counts_of, inflate
from ..context import Applying, Result
from ..services import rebuild
from ..store import Store
from ..tables import decode_store, paused_gc


def _decode(body: Any) -> tuple[Store, dict[str, int]]:
    if not isinstance(body, bytes):
        raise invalid("state", "required: the deflated snapshot encoding")
    try:
        with paused_gc():
            tables = msgpack.unpackb(inflate(body), raw=False, strict_map_key=True)
            store = decode_store(tables)
    except DamagedSnapshot as exc:
        raise invalid("state", str(exc)) from None
    except Exception as exc:  # a malformed snapshot raises whatever its field breaks
        raise invalid("state", f"the snapshot does not decode: {type(exc).__name__}: "
                               f"{exc}"[:300]) from None
    counts = counts_of(tables)
    held = {"namespaces": len(store.namespaces), "jobs": len(store.jobs),
            "allocations": len(store.allocs), "nodes": len(store.nodes),
            "tokens": len(store.acl_tokens), "policies": len(store.acl_policies)}
    for name, _ in COUNTED:
        if held[name] != counts[name]:
            raise invalid("state", f"the snapshot names some of its {name} twice")
    return store, held


def restore(tx: Applying, args: dict[str, Any]) -> Result:
    source = args.get("index")
    if isinstance(source, bool) or not isinstance(source, int) or source < 0:
        raise invalid("index", "required: the log index the snapshot was taken at")
    restored, held = _decode(args.get("state"))
    if not restored.acl_bootstrapped:
        # Every saved snapshot is bootstrapped (saving needs a token); one that is not
        # would unlock the cluster: the open bootstrap route would hand management to
        # whoever asks first.
        raise invalid("state", "the snapshot has no access control (never bootstrapped): "
                               "restoring it would leave the cluster open")
    tx.store.adopt(restored, tx.index)
    # Every service's index moves to the restore's: a watcher cannot tell what changed.
    tx.store.registry = rebuild(tx.store, tx.index)
    tx.event("state_restored", source_index=source, **held)
    return {"restored": {"source_index": source, **held}}
