"""An in-memory `Files` that knows what was synced, and a power switch.

Each file has two versions: what a reader sees now, and what is on stable storage. A
write changes the first; `sync` (or a durable `replace`) copies it to the second;
`power_loss()` throws away everything that was not synced, as a power cut does.
"""

from __future__ import annotations

from pathlib import Path


class LossyLog:
    def __init__(self, files: LossyFiles, path: Path) -> None:
        self.files = files
        self.path = path
        self.closed = False

    def size(self) -> int:
        return len(self.files.current[self.path])

    def append(self, data: bytes) -> None:
        self.files.current[self.path] += data

    def truncate(self, size: int) -> None:
        del self.files.current[self.path][size:]

    def sync(self) -> None:
        self.files.syncs += 1
        self.files.log_syncs += 1
        self.files.synced[self.path] = bytearray(self.files.current[self.path])

    def close(self) -> None:
        self.closed = True


class LossyFiles:
    def __init__(self) -> None:
        self.current: dict[Path, bytearray] = {}
        self.synced: dict[Path, bytearray] = {}
        self.syncs = 0  # fsyncs of any kind
        self.log_syncs = 0  # fdatasyncs of append-only files

    def read(self, path: Path) -> bytes | None:
        data = self.current.get(path)
        return None if data is None else bytes(data)

    def replace(self, path: Path, data: bytes, durable: bool = True) -> None:
        self.current[path] = bytearray(data)
        if durable:
            self.syncs += 1
            self.synced[path] = bytearray(data)

    def open_log(self, path: Path) -> LossyLog:
        if path not in self.current:
            raise FileNotFoundError(path)
        return LossyLog(self, path)

    def remove(self, path: Path) -> None:
        self.current.pop(path, None)

    def power_loss(self) -> None:
        self.current = {p: bytearray(d) for p, d in self.synced.items()}

    def on_disk(self, path: Path) -> bytes:
        return bytes(self.synced.get(path, b""))
