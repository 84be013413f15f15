"""Private files and directories: created 0600/0700, and refused when others can read them.

Keys, tokens, the cluster secret, journals and logs live under the data directories; a job
running as another user must not be able to read any of them.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


class ExposedFile(Exception):
    """A secret file that users other than its owner can read or write."""


def private_dir(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700; the path back."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    # mkdir's mode is filtered by the umask and does nothing for an existing directory.
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write `data` to a file only its owner can read (0600 from its first byte).

    With exclusive=True an existing file is an error (FileExistsError), never overwritten.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(data)


def check_private(path: Path, what: str = "key file") -> None:
    """Refuse a secret file that group or others may read or write (ExposedFile says how
    to fix it); a missing file raises FileNotFoundError."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ExposedFile(
            f"{what} {path} has mode {mode:04o}: others can read it; "
            f"run `chmod 600 {path}` (it must be readable by its owner only)")


def read_private(path: Path, what: str = "key file") -> bytes:
    """The content of a secret file, after check_private."""
    check_private(path, what)
    return path.read_bytes()


def restrict_files(directory: Path, patterns: tuple[str, ...]) -> None:
    """Make the regular files in `directory` matching `patterns` (globs, not recursive)
    0600: files an earlier version wrote with looser modes. Only names we write are
    touched, whatever directory a user points us at."""
    for pattern in patterns:
        for path in directory.glob(pattern):
            with contextlib.suppress(OSError):
                if path.is_file() and not path.is_symlink():
                    os.chmod(path, PRIVATE_FILE_MODE)


def private_opener(path: str, flags: int) -> int:
    """An `opener` for open() that creates files 0600 (existing files keep their mode)."""
    return os.open(path, flags, PRIVATE_FILE_MODE)


def read_secret(path: Path, what: str) -> str:
    """A one-line secret (token, cluster secret) from a file private to its owner.

    Raises ExposedFile when others can read it, ValueError when it is empty, OSError when
    it cannot be read.
    """
    value = read_private(path, what).decode().strip()
    if not value:
        raise ValueError(f"{what} {path} is empty")
    return value
