"""Read a replica's Raft log from its data directory, whatever journal format it uses.

`read_log` is the one entry point the checkers use; switching to another journal format is a
change here only. It reads, by the file's header:

- hacontrol's durable journal (`HCRAFTJ`, checksummed records) and meta file, through the
  reader the Raft package provides (`hacontrol.raft.journal.read_entries`, `decode_meta`);
- pysyncobj 0.3's mmap journal (`PYSYNCOBJ`, see pysyncobj/journal.py) and its pickled
  `.meta` file, read here:

    header: APP_NAME (24 B) + APP_VERSION (8 B) + FORMAT_VERSION (u32) + LAST_RECORD_OFFSET (u32)
    record: size (u32) + idx (u64) + term (u64) + command (size - 16 B) + size (u32)

A live replica may be half-way through a record, and a journal after a power cut may end in
garbage; reading stops at the first record whose two size fields disagree or that runs past
the end, and says so in `torn_at`.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacontrol.raft.safety import safe_loads

JOURNAL = "raft.journal"
NAME_SIZE = 24
VERSION_SIZE = 8
LAST_RECORD_OFFSET_AT = NAME_SIZE + VERSION_SIZE + 4
FIRST_RECORD_OFFSET = LAST_RECORD_OFFSET_AT + 4


@dataclass
class Entry:
    index: int
    term: int
    crc: int  # crc32 of the command: enough to tell two commands apart

    def to_json(self) -> list[int]:
        return [self.index, self.term, self.crc]


@dataclass
class ReplicaLog:
    entries: dict[int, Entry] = field(default_factory=dict)
    current_term: int | None = None
    voted_for: str | None = None
    commit_index: int | None = None
    torn_at: int | None = None  # byte offset where reading stopped early
    error: str | None = None  # the journal could not be read at all

    def summary(self) -> dict[str, Any]:
        idx = sorted(self.entries)
        return {"first": idx[0] if idx else None, "last": idx[-1] if idx else None,
                "entries": len(idx), "last_term": self.entries[idx[-1]].term if idx else None,
                "term": self.current_term, "voted_for": self.voted_for,
                "commit": self.commit_index, "torn_at": self.torn_at, "error": self.error}


def read_log(data_dir: Path) -> ReplicaLog:
    """The log, term, vote and commit index a replica would restart with from `data_dir`."""
    try:
        with (data_dir / JOURNAL).open("rb") as f:
            head = f.read(16)
    except OSError:
        head = b""
    if head.startswith(b"PYSYNCOBJ"):
        return _read_pysyncobj(data_dir)
    return _read_durable(data_dir)


def _read_durable(data_dir: Path) -> ReplicaLog:
    try:
        from hacontrol.raft import journal as durable
    except ImportError:  # a build of the server without the durable journal
        return _read_pysyncobj(data_dir)
    log = ReplicaLog()
    path = data_dir / JOURNAL
    try:
        entries = durable.read_entries(path)
    except Exception as exc:  # damage before the tail: the replica refuses to start
        log.error = f"{path}: {exc}"
        entries = []
    for command, idx, term in entries:
        log.entries[idx] = Entry(idx, term, zlib.crc32(command))
    meta_path = data_dir / (JOURNAL + ".meta")
    try:
        data = meta_path.read_bytes()
    except FileNotFoundError:
        return log
    except OSError as exc:
        log.error = f"{meta_path}: {exc}"
        return log
    if not data.startswith(b"HCRAFTM"):
        _read_meta(meta_path, log)  # pysyncobj's pickled meta beside an mmap journal
        return log
    try:
        meta = durable.decode_meta(data, str(meta_path))
    except Exception as exc:
        log.error = f"{meta_path}: {exc}"
        return log
    log.current_term, log.voted_for, log.commit_index = (meta.term, meta.voted_for,
                                                         meta.commit_index)
    return log


def _read_pysyncobj(data_dir: Path) -> ReplicaLog:
    log = ReplicaLog()
    path = data_dir / JOURNAL
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""  # a replica that lost its journal restarts on an empty one
    except OSError as exc:
        log.error = f"{path}: {exc}"
        return log
    _read_meta(data_dir / (JOURNAL + ".meta"), log)
    if not data:
        return log
    if len(data) < FIRST_RECORD_OFFSET or not data.startswith(b"PYSYNCOBJ"):
        log.error = f"{path}: no pysyncobj journal header ({len(data)} bytes)"
        return log
    (end,) = struct.unpack_from("<I", data, LAST_RECORD_OFFSET_AT)
    end = min(end, len(data))
    pos = FIRST_RECORD_OFFSET
    while pos < end:
        if pos + 4 > end:
            log.torn_at = pos
            break
        (size,) = struct.unpack_from("<I", data, pos)
        stop = pos + 4 + size
        if size < 16 or stop + 4 > end or struct.unpack_from("<I", data, stop)[0] != size:
            log.torn_at = pos
            break
        idx, term = struct.unpack_from("<QQ", data, pos + 4)
        log.entries[idx] = Entry(idx, term, zlib.crc32(data[pos + 20:stop]))
        pos = stop + 4
    return log


def _read_meta(path: Path, log: ReplicaLog) -> None:
    try:
        meta = safe_loads(path.read_bytes())
    except FileNotFoundError:
        return
    except Exception as exc:  # a torn meta file is what pysyncobj would also fail to read
        log.error = f"{path}: unreadable ({exc!r})"
        return
    if isinstance(meta, dict):
        term = meta.get("currentTerm")
        commit = meta.get("raftCommitIndex")
        voted = meta.get("votedForNodeId")
        log.current_term = term if isinstance(term, int) else None
        log.commit_index = commit if isinstance(commit, int) else None
        log.voted_for = None if voted is None else str(voted)
