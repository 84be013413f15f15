"""The Raft dump file: pysyncobj's compaction snapshot, in our own msgpack encoding."""

from __future__ import annotations

import os
from typing import Any

import msgpack

DUMP_FORMAT = 1
Entry = tuple[bytes, int, int]


def write(file_name: str, data: tuple[Any, ...], state: bytes, members: list[list[str]]
          ) -> None:
    """pysyncobj hands us (last applied entry, the one before it, cluster); the machine's
    state and the members' ids and API URLs go alongside."""
    last, prev, cluster = data
    payload = msgpack.packb(
        {
            "format": DUMP_FORMAT,
            "last": [bytes(last[0]), int(last[1]), int(last[2])],
            "prev": [bytes(prev[0]), int(prev[1]), int(prev[2])],
            "cluster": sorted(getattr(n, "address", str(n)) for n in cluster),
            # [raft, id, api] of every member known (older readers ignore it).
            "members": members,
            "state": state,
        },
        use_bin_type=True,
    )
    with open(file_name, "wb") as f:
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())


def read(file_name: str) -> tuple[Entry, Entry, list[str], Any, bytes]:
    """(last entry, the one before, cluster addresses, members rows, machine state)."""
    with open(file_name, "rb") as f:
        doc = msgpack.unpackb(f.read(), raw=False, strict_map_key=True)
    if not isinstance(doc, dict) or doc.get("format") != DUMP_FORMAT:
        raise ValueError(f"unsupported raft dump format in {file_name}")
    last = doc["last"]
    prev = doc["prev"]
    # Tuples, exactly as the journal yields them: pysyncobj compares these with its
    # journal head and clears the journal on any mismatch.
    return ((bytes(last[0]), int(last[1]), int(last[2])),
            (bytes(prev[0]), int(prev[1]), int(prev[2])),
            [str(a) for a in doc["cluster"]], doc.get("members"), doc["state"])
