"""The journal's on-disk format: a header, then one checksummed record per log entry.

    header  b"HCRAFTJ" + format byte (1)                                   8 bytes
    record  b"HCRE" | length u32 | crc32c u32 | index u64 | term u64 | command
            <--------- 12 bytes ---------->  <-------- length bytes -------->

Little-endian. The crc32c (Castagnoli, google-crc32c's C implementation) covers the
length field and the payload, so a flipped bit in either is caught. The per-record magic
lets the reader look for intact records after a damaged one: that is how a torn tail (the
end of the file was being written when the power went: cut it off) is told apart from
damage before the tail (an intact record follows: refuse to start).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import google_crc32c

from hacontrol.raft.storage import StorageError

FORMAT = 1
FILE_MAGIC = b"HCRAFTJ" + bytes([FORMAT])
HEADER_SIZE = len(FILE_MAGIC)
OLD_PYSYNCOBJ_MAGIC = b"PYSYNCOBJ"
RECORD_MAGIC = b"HCRE"
_HEAD = struct.Struct("<4sII")  # magic, payload length, crc32c(length field + payload)
_ENTRY = struct.Struct("<QQ")  # index, term
RECORD_OVERHEAD = _HEAD.size + _ENTRY.size
MAX_RECORD_BYTES = 1 << 30

Entry = tuple[bytes, int, int]  # (command, index, term): pysyncobj's log entry shape


def _crc(length_field: bytes, payload: bytes) -> int:
    return int(google_crc32c.extend(google_crc32c.value(length_field), payload))


def encode(command: bytes, index: int, term: int) -> bytes:
    payload = _ENTRY.pack(index, term) + command
    length_field = struct.pack("<I", len(payload))
    return RECORD_MAGIC + length_field + struct.pack("<I", _crc(length_field, payload)) + payload


def _decode_at(data: bytes, pos: int) -> tuple[Entry, int] | str:
    """The record at `pos` and the offset after it, or why there is none."""
    if len(data) - pos < _HEAD.size:
        return "incomplete record header"
    magic, length, crc = _HEAD.unpack_from(data, pos)
    if magic != RECORD_MAGIC:
        return "no record marker"
    if length < _ENTRY.size or length > MAX_RECORD_BYTES:
        return f"implausible record length {length}"
    start = pos + _HEAD.size
    end = start + length
    if end > len(data):
        return f"record of {length} bytes runs past the end of the file"
    payload = data[start:end]
    if _crc(data[pos + 4:pos + 8], payload) != crc:
        return "checksum mismatch"
    index, term = _ENTRY.unpack_from(payload)
    return (payload[_ENTRY.size:], index, term), end


def _next_intact(data: bytes, pos: int) -> int | None:
    """Offset of the first intact record starting after `pos`, if any."""
    at = data.find(RECORD_MAGIC, pos + 1)
    while at >= 0:
        if not isinstance(_decode_at(data, at), str):
            return at
        at = data.find(RECORD_MAGIC, at + 1)
    return None


@dataclass
class Scan:
    entries: list[Entry] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)  # file offset of each entry's record
    end: int = HEADER_SIZE  # where the intact records end
    torn: str | None = None  # why the bytes after `end` were not records


def check_header(data: bytes, name: str) -> None:
    if data.startswith(OLD_PYSYNCOBJ_MAGIC):
        raise StorageError(
            f"{name} is a journal in pysyncobj's own (mmap, unchecksummed) format, which "
            "this version does not read; move the data directory away and let the replica "
            "catch up from its peers")
    if not data.startswith(FILE_MAGIC):
        if data.startswith(FILE_MAGIC[:-1]):
            raise StorageError(f"{name}: journal format {data[HEADER_SIZE - 1]} is not "
                               f"supported (this version reads format {FORMAT})")
        raise StorageError(f"{name} is not a hacontrol raft journal (unknown header)")


def scan(data: bytes, name: str = "journal") -> Scan:
    """Read every intact record of a journal's bytes.

    Damage at the very end (no intact record after it) is a torn tail: returned in
    `torn`, with `end` where the caller should cut. Damage followed by an intact record,
    or records whose indexes do not follow each other, raise StorageError.
    """
    check_header(data, name)
    out = Scan()
    pos = HEADER_SIZE
    while pos < len(data):
        got = _decode_at(data, pos)
        if isinstance(got, str):
            later = _next_intact(data, pos)
            if later is not None:
                raise StorageError(
                    f"{name}: damaged record at offset {pos} ({got}) followed by an intact "
                    f"record at offset {later}: the journal is damaged before its tail; "
                    "refusing to start on it")
            out.torn = f"{got} at offset {pos}, {len(data) - pos} bytes"
            break
        entry, nxt = got
        if out.entries and entry[1] != out.entries[-1][1] + 1:
            raise StorageError(
                f"{name}: record at offset {pos} has index {entry[1]} after index "
                f"{out.entries[-1][1]}; refusing to start on it")
        out.entries.append(entry)
        out.offsets.append(pos)
        pos = nxt
    out.end = pos
    return out
