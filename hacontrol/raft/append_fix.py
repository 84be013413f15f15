"""Raft-correct handling of AppendEntries that overlap a follower's log.

pysyncobj truncates a follower's log after `prevLogIdx` whenever the message starts before
the end of the log, even when every entry it carries is already there with the same term.
A leader resending a batch (after a rewound next index, or with a pipelined heartbeat) thus
deletes entries the follower had, including committed and applied ones: the follower's
commit index moves backwards and, for a moment, a committed entry may live on fewer
replicas than a majority. Raft (section 5.3) only deletes an existing entry when it
*conflicts* with a new one (same index, different term).

`rewrite` turns such a message into one pysyncobj handles without deleting anything: the
already-present prefix is skipped, and when nothing new remains the reply is pinned to the
last entry actually verified against the leader, so the leader never learns a match index
higher than the follower has proven.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Entry = tuple[Any, int, int]  # (command, index, term), pysyncobj's log entry shape


def rewrite(message: dict[str, Any], ours: Sequence[Entry], last_index: int,
            last_term: int) -> tuple[dict[str, Any], int | None]:
    """Return (message to hand to pysyncobj, next index to reply instead, if any).

    `ours` are the follower's entries from `prevLogIdx` to the end of its log.
    """
    prev = message["prevLogIdx"]
    if prev >= last_index or not ours or ours[0][2] != message["prevLogTerm"]:
        # Appending at the end, or a mismatch pysyncobj rejects anyway: nothing to fix.
        return message, None
    have = {e[1]: e[2] for e in ours}
    entries = list(message.get("entries") or [])
    verified, verified_term = prev, message["prevLogTerm"]
    i = 0
    while i < len(entries) and entries[i][1] in have and have[entries[i][1]] == entries[i][2]:
        verified, verified_term = entries[i][1], entries[i][2]
        i += 1
    rest = entries[i:]
    if rest or verified == last_index:
        # Either a real conflict at rest[0] (truncating from there is what Raft asks) or
        # new entries continuing our log: pysyncobj does the right thing from `verified`.
        return {**message, "prevLogIdx": verified, "prevLogTerm": verified_term,
                "entries": rest}, None
    # Everything sent is already here and our log goes further. Keep the extra entries
    # (they may be committed), and tell the leader only what was verified.
    return {**message, "prevLogIdx": last_index, "prevLogTerm": last_term, "entries": [],
            "commit_index": min(message["commit_index"], verified)}, verified + 1
