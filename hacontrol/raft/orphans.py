"""Writers' callbacks that pysyncobj holds but will never call, failed at once.

pysyncobj calls a submitter's callback when its entry is applied. Two events leave
callbacks behind that never fire, and every such writer would wait out its deadline: a
snapshot installed past their entries (whether each entry was theirs is unknowable from a
snapshot) and a journal failure that stops the replica. Both report an unknown outcome.
"""

from __future__ import annotations

from typing import Any

# pysyncobj's FAIL_REASON.UNKNOWN_OUTCOME (raft/replica.py names them all).
UNKNOWN_OUTCOME = 7


def fail_all(node: Any) -> None:
    """Every waiting callback, forwarded commands' included: the replica stops."""
    try:
        waiting = node._SyncObj__commandsWaitingCommit
        forwarded = node._SyncObj__commandsWaitingReply
        callbacks = [cb for entries in waiting.values() for _term, cb in entries]
        callbacks += list(forwarded.values())
        waiting.clear()
        forwarded.clear()
    except AttributeError:
        callbacks = []
    for callback in callbacks:
        callback(None, UNKNOWN_OUTCOME)


def fail_applied(node: Any) -> int:
    """The callbacks of entries at or below the applied index (a snapshot jumped past
    them); how many entries had some."""
    waiting = node._SyncObj__commandsWaitingCommit
    applied = node.raftLastApplied
    orphaned = [idx for idx in list(waiting) if idx <= applied]
    for idx in orphaned:
        for _term, callback in waiting.pop(idx, []):
            callback(None, UNKNOWN_OUTCOME)
    return len(orphaned)
