"""SHA-1 and SHA-256 hex digests and a constant-time comparison, without hashlib or hmac.

The agent hashes two short strings: its data directory (the name of its cgroups' scope)
and the bearer token of a call to its API. Importing hashlib (hmac imports it too) has
OpenSSL set up every digest it offers, 0.9 MB of resident memory an agent keeps for as
long as it runs (`import ssl` against `import ssl, hashlib` in a fresh interpreter; asyncio
imports ssl in any case). CPython's own implementations, the modules hashlib falls back to
without OpenSSL, give the same digests for nothing; hashlib stays the fallback for an
interpreter built without them.
"""

from __future__ import annotations

import contextlib
import importlib
from _operator import _compare_digest
from collections.abc import Callable
from typing import Any

__all__ = ["compare", "sha1_hex", "sha256_hex"]


def _builtin(*candidates: tuple[str, str]) -> Callable[[bytes], Any]:
    for module, name in candidates:
        with contextlib.suppress(ImportError, AttributeError):
            found: Callable[[bytes], Any] = getattr(importlib.import_module(module), name)
            return found
    raise ImportError(f"none of {candidates}")


# `_sha2` since Python 3.12, `_sha256` before.
_sha1 = _builtin(("_sha1", "sha1"), ("hashlib", "sha1"))
_sha256 = _builtin(("_sha2", "sha256"), ("_sha256", "sha256"), ("hashlib", "sha256"))


def sha1_hex(data: bytes) -> str:
    return str(_sha1(data).hexdigest())


def sha256_hex(data: bytes) -> str:
    return str(_sha256(data).hexdigest())


def compare(a: str, b: str) -> bool:
    """Equal, in a time that does not depend on where they differ (hmac.compare_digest,
    without OpenSSL)."""
    return _compare_digest(a, b)
