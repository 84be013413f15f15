"""The snapshot file (`hacontrol operator snapshot save|inspect|restore`).

    magic "HACSNAP\\n" | header length (u32, big-endian) | header | body | SHA-256

The header is a msgpack map: the file `format`, the log `index` and Raft `term` the state
was read at, the replica that served it, the time, the `compression` of the body, the
lengths of the body and of the state it inflates to, and the `counts` of each table. The
body is the state's own snapshot encoding (`snapshot.encode`, the bytes the state digest
is taken over), deflated. The trailer is the SHA-256 of everything before it, so a flipped
bit anywhere (header included) or a cut is found before anything is restored.

Never pickle: a snapshot file comes from outside the cluster, and everything read from it
is msgpack with bounded sizes. Nothing here imports the state machine (only the tables):
the restore handler (`handlers/restore.py`) uses `inflate` while it applies a log entry.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .tables import paused_gc

MAGIC = b"HACSNAP\n"
FORMAT = 1
COMPRESSION = "zlib"
DIGEST_BYTES = 32
MAX_HEADER_BYTES = 64 * 1024
# The most a body may inflate to (every replica inflates a restore entry; a deflate bomb
# must stop here, not at the memory's end). 10,000 jobs are ~13 MB of state.
MAX_STATE_BYTES = 512 * 1024 * 1024
# What `counts` reports, as the snapshot map names its tables.
COUNTED = (("namespaces", "namespaces"), ("jobs", "jobs"), ("allocations", "allocs"),
           ("nodes", "nodes"), ("tokens", "acl_tokens"), ("policies", "acl_policies"))
_LEN = struct.Struct(">I")


class DamagedSnapshot(ValueError):
    """The file is not a snapshot this version can read, or it was damaged."""


@dataclass(frozen=True)
class Backup:
    """A verified snapshot file: its header fields and its (still deflated) body."""

    index: int
    term: int
    body: bytes
    state_bytes: int
    counts: dict[str, int]
    created_at: float = 0.0
    source: str = ""
    sha256: str = ""
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What `inspect` shows."""
        return {"format": FORMAT, "index": self.index, "term": self.term,
                "created_at": self.created_at, "source": self.source, "size": self.size,
                "body_bytes": len(self.body), "state_bytes": self.state_bytes,
                "sha256": self.sha256, "counts": dict(self.counts)}


def counts_of(tables: dict[str, Any]) -> dict[str, int]:
    """How many rows each table of a decoded snapshot map holds."""
    out: dict[str, int] = {}
    for name, key in COUNTED:
        rows = tables.get(key, [])
        out[name] = len(rows) if isinstance(rows, list) else 0
    return out


def pack(state: bytes, index: int, term: int, counts: dict[str, int], *,
         created_at: float, source: str, level: int = 6) -> bytes:
    """The whole file for the state's snapshot encoding `state`."""
    body = zlib.compress(state, level)
    header = msgpack.packb({"format": FORMAT, "index": index, "term": term,
                            "created_at": created_at, "source": source,
                            "compression": COMPRESSION, "state_bytes": len(state),
                            "body_bytes": len(body), "counts": counts}, use_bin_type=True)
    head = MAGIC + _LEN.pack(len(header)) + header
    digest = hashlib.sha256(head)
    digest.update(body)
    return b"".join((head, body, digest.digest()))


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise DamagedSnapshot("not a hacontrol snapshot file (wrong magic bytes)")
    start = len(MAGIC) + _LEN.size
    if len(data) < start:
        raise DamagedSnapshot("truncated: the file ends inside its header")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    if length > MAX_HEADER_BYTES:
        raise DamagedSnapshot(f"damaged: a header of {length} bytes (at most "
                              f"{MAX_HEADER_BYTES})")
    if len(data) < start + length:
        raise DamagedSnapshot("truncated: the file ends inside its header")
    try:
        header = msgpack.unpackb(data[start:start + length], raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several unrelated types on garbage
        raise DamagedSnapshot("damaged: the header does not decode") from None
    if not isinstance(header, dict):
        raise DamagedSnapshot("damaged: the header is not a map")
    header["_start"] = start + length
    return header


def _int(header: dict[str, Any], key: str) -> int:
    value = header.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DamagedSnapshot(f"damaged: the header's {key!r} is not a count")
    return value


def unpack(data: bytes) -> Backup:
    """The verified file; raises `DamagedSnapshot` saying what is wrong with it."""
    header = _header(data)
    fmt = header.get("format")
    if fmt != FORMAT:
        raise DamagedSnapshot(f"unsupported snapshot format {fmt!r} (this version reads "
                              f"{FORMAT})")
    body_len = _int(header, "body_bytes")
    start = header["_start"]
    expected = start + body_len + DIGEST_BYTES
    if len(data) < expected:
        raise DamagedSnapshot(f"truncated: {len(data)} bytes of the {expected} its header "
                              f"announces")
    if len(data) > expected:
        raise DamagedSnapshot(f"damaged: {len(data) - expected} bytes after the end its "
                              f"header announces")
    digest = hashlib.sha256(memoryview(data)[:start + body_len]).digest()
    if digest != data[start + body_len:]:
        raise DamagedSnapshot("damaged: the checksum does not match the contents")
    # The checksum covers the header: from here on a wrong field is a bug of the writer,
    # still refused rather than trusted.
    if header.get("compression") != COMPRESSION:
        raise DamagedSnapshot(f"unsupported compression {header.get('compression')!r}")
    raw_counts = header.get("counts")
    if not isinstance(raw_counts, dict):
        raise DamagedSnapshot("damaged: the header has no counts")
    counts = {str(k): int(v) for k, v in raw_counts.items()
              if isinstance(v, int) and not isinstance(v, bool)}
    created = header.get("created_at")
    return Backup(index=_int(header, "index"), term=_int(header, "term"),
                  body=bytes(data[start:start + body_len]),
                  state_bytes=_int(header, "state_bytes"), counts=counts,
                  created_at=float(created) if isinstance(created, int | float) else 0.0,
                  source=str(header.get("source", "")), sha256=digest.hex(), size=len(data))


def inflate(body: bytes, limit: int = MAX_STATE_BYTES) -> bytes:
    """The state encoding a body deflates; raises `DamagedSnapshot` past `limit` bytes or
    on a stream that is not whole."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(body, limit)
    except zlib.error as exc:
        raise DamagedSnapshot(f"damaged: the body does not inflate ({exc})") from None
    if inflater.unconsumed_tail:
        raise DamagedSnapshot(f"the state inflates beyond {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise DamagedSnapshot("damaged: the body is not one whole deflate stream")
    return out


def inflated(backup: Backup, limit: int = MAX_STATE_BYTES) -> bytes:
    """The body inflated, its length checked against the header's. (zlib lets other
    threads run meanwhile, which decoding the state would not.)"""
    raw = inflate(backup.body, limit)
    if len(raw) != backup.state_bytes:
        raise DamagedSnapshot(f"damaged: the state is {len(raw)} bytes, its header says "
                              f"{backup.state_bytes}")
    return raw


def state_tables(backup: Backup, limit: int = MAX_STATE_BYTES) -> dict[str, Any]:
    """The body inflated and decoded to the snapshot map (not yet records), its counts
    checked against the header's."""
    raw = inflated(backup, limit)
    try:
        with paused_gc():
            tables = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception:
        raise DamagedSnapshot("damaged: the state does not decode") from None
    if not isinstance(tables, dict):
        raise DamagedSnapshot("damaged: the state is not a map")
    found = counts_of(tables)
    if any(backup.counts.get(k) != v for k, v in found.items()):
        raise DamagedSnapshot(f"damaged: the state holds {found}, its header says "
                              f"{backup.counts}")
    return tables
