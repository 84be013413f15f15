"""Per-allocation log files: size-based rotation, tail and follow.

The child holds its stdout/stderr files open with O_APPEND, and keeps them
after the agent dies, so the agent cannot swap the file under it. Rotation is
therefore copy-truncate: ``x.log`` is copied to ``x.log.1`` (older copies
shifted to ``.2`` ...), then truncated to zero; O_APPEND makes the child's
next write land at the new end of file instead of leaving a hole.

Loss window: bytes the child writes between the end of the copy and the
truncate are lost (typically microseconds to a few milliseconds for a 10 MiB
file). ``follow_log`` reads what it missed of the old file from ``.1`` after
a rotation, so a follower loses only that window too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from hacontrol.model.spec import LogPolicy
from hacontrol.tls.files import private_opener

STREAMS = ("stdout", "stderr")
_READ_CHUNK = 64 * 1024
_TAIL_BLOCK = 64 * 1024
# The most a tail answers, whatever number of lines it asks for: enough for any reading by a
# person, small enough to read in well under the agent's heartbeat interval.
MAX_TAIL_BYTES = 4 * 1024 * 1024


def log_path(alloc_dir: Path, stream: str) -> Path:
    if stream not in STREAMS:
        raise ValueError(f"unknown stream {stream!r}")
    return alloc_dir / f"{stream}.log"


def rotated(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def needs_rotation(size: int, policy: LogPolicy) -> bool:
    return size > policy.max_bytes


def rotate_if_needed(path: Path, policy: LogPolicy) -> bool:
    """Copy-truncate ``path`` when it is over the limit; True if it rotated."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if not needs_rotation(size, policy):
        return False
    if policy.keep == 0:
        os.truncate(path, 0)
        return True
    with contextlib.suppress(FileNotFoundError):
        rotated(path, policy.keep).unlink()
    for n in range(policy.keep - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(rotated(path, n), rotated(path, n + 1))
    tmp = path.with_name(path.name + ".rotating")
    # Imported here: shutil brings zlib, bz2 and lzma, 0.4 MB an agent that never
    # rotates would keep.
    import shutil

    with open(path, "rb") as src, open(tmp, "wb", opener=private_opener) as dst:
        shutil.copyfileobj(src, dst, _READ_CHUNK)
    # Renamed into place only when complete, so a follower that finds the
    # live file truncated always finds the whole old content in .1.
    os.replace(tmp, rotated(path, 1))
    os.truncate(path, 0)
    return True


def tail(path: Path, lines: int, max_bytes: int = MAX_TAIL_BYTES) -> bytes:
    """The last ``lines`` lines of ``path``, and never more than its last ``max_bytes``.

    Reads backwards in blocks and joins them once, so the cost is the size of the answer,
    whatever ``lines`` asks for.
    """
    if lines <= 0 or max_bytes <= 0:
        return b""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return b""
    with f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        blocks: list[bytes] = []
        newlines = 0
        # One newline more than lines: a trailing newline ends the last line
        # rather than starting another.
        while pos > 0 and newlines <= lines and end - pos < max_bytes:
            step = min(_TAIL_BLOCK, pos, max_bytes - (end - pos))
            pos -= step
            f.seek(pos)
            block = f.read(step)
            blocks.append(block)
            newlines += block.count(b"\n")
        cut = False
        if pos > 0 and end - pos >= max_bytes:
            f.seek(pos - 1)
            cut = f.read(1) != b"\n"  # the cap fell inside a line
    data = b"".join(reversed(blocks))
    if cut and b"\n" in data:
        data = data[data.index(b"\n") + 1:]  # leave out the line the cap cut
    if not data:
        return b""
    body = data[:-1] if data.endswith(b"\n") else data
    parts = body.split(b"\n")
    if pos > 0 or len(parts) > lines:
        parts = parts[-lines:]
    out = b"\n".join(parts)
    return out + b"\n" if data.endswith(b"\n") else out


def read_log(alloc_dir: Path, stream: str, tail_lines: int,
             max_bytes: int = MAX_TAIL_BYTES) -> bytes:
    """Last ``tail_lines`` lines, reaching into the newest rotated file if needed; at most
    ``max_bytes`` in all. Blocking: call it off the event loop."""
    path = log_path(alloc_dir, stream)
    live = tail(path, tail_lines, max_bytes)
    have = live.count(b"\n") + (0 if live.endswith(b"\n") or not live else 1)
    if have >= tail_lines:
        return live
    older = tail(rotated(path, 1), tail_lines - have, max_bytes - len(live))
    return older + live


async def follow_log(
    alloc_dir: Path, stream: str, from_offset: int = 0, poll_s: float = 0.1
) -> AsyncIterator[bytes]:
    """Yield bytes appended to the log from ``from_offset`` on, forever.

    A negative offset counts from the current end. A rotation is noticed by
    ``.1`` being a new file (each rotation renames a fresh copy into place) or
    the live file shrinking; the rest of the old content is then read from
    ``.1`` before continuing at the start of the live file.
    """
    path = log_path(alloc_dir, stream)
    offset = from_offset
    if offset < 0:
        with contextlib.suppress(FileNotFoundError):
            offset = max(path.stat().st_size + offset, 0)
        offset = max(offset, 0)
    rot_ino = _ino(rotated(path, 1))
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        ino = _ino(rotated(path, 1))
        if ino != rot_ino or size < offset:
            rot_ino = ino
            # Rotated since we last looked: .1 holds what we had not read yet.
            old = rotated(path, 1)
            async for chunk in _read_range(old, offset, None):
                yield chunk
            offset = 0
            continue
        if size > offset:
            async for chunk in _read_range(path, offset, size):
                offset += len(chunk)
                yield chunk
            continue
        await asyncio.sleep(poll_s)


def _ino(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


async def _read_range(path: Path, start: int, end: int | None) -> AsyncIterator[bytes]:
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return
    with f:
        f.seek(start)
        pos = start
        while end is None or pos < end:
            want = _READ_CHUNK if end is None else min(_READ_CHUNK, end - pos)
            chunk = f.read(want)
            if not chunk:
                return
            pos += len(chunk)
            yield chunk
