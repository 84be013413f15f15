"""The cluster secret and the keys the Raft port seals its frames with.

A cluster secret is one or more keys, separated by whitespace, each written
``hcraft2.<salt>.<key>``: 16 random bytes of salt and 32 random bytes of key,
in hex. The first key seals what this replica sends; every listed key is
accepted on what it receives, which is what makes a rolling rotation possible
(``docs/security-raft.md``). ``hcraft2`` keys seal with AES-256-GCM; ``hcraft1``
keys, which earlier versions generated, with Fernet (``cipher``), and stay valid.

pysyncobj derives its Fernet key with PBKDF2 and a salt fixed in its source,
so the same password gives the same key in every cluster and a precomputed
dictionary works against all of them. Here the key material is 32 random
bytes, so a slow KDF buys nothing; HKDF-SHA256 with a per-cluster random salt,
generated together with the key and stored beside it, is enough to give every
cluster its own keys. The salt travels inside the secret so that every
place that hands a replica its secret (a file, an environment variable) keeps
carrying exactly one value.
"""

from __future__ import annotations

import re
import secrets
import threading
from dataclasses import dataclass

from cryptography.fernet import Fernet

from hacontrol.raft.cipher import FrameCipher, FrameKey, fernet_key

KEY_PREFIX = "hcraft2"  # what new secrets are made of: AES-256-GCM frames
FERNET_PREFIX = "hcraft1"  # earlier versions' keys: Fernet frames
SALT_BYTES = 16
KEY_BYTES = 32
_HKDF_INFO = b"hacontrol raft fernet v1"
_ENTRY = re.compile(rf"^({KEY_PREFIX}|{FERNET_PREFIX})\.([0-9a-f]{{{2 * SALT_BYTES}}})\.([0-9a-f]{{{2 * KEY_BYTES}}})$")


class SecretError(ValueError):
    """The cluster secret is missing or too weak to run the Raft port."""


@dataclass(frozen=True)
class RaftKey:
    salt: bytes
    key: bytes
    fernet_frames: bool = False  # an hcraft1 key

    def frame_key(self) -> FrameKey | Fernet:
        if self.fernet_frames:
            return fernet_key(self.salt, self.key, _HKDF_INFO)
        return FrameKey(self.salt, self.key)


def generate_secret() -> str:
    """A new cluster secret: one key with its own random salt."""
    return f"{KEY_PREFIX}.{secrets.token_hex(SALT_BYTES)}.{secrets.token_hex(KEY_BYTES)}"


def parse_secret(text: str | None) -> list[RaftKey]:
    """The keys of a cluster secret, the sending key first.

    Raises SecretError, naming what is wrong but never echoing the secret.
    """
    entries = (text or "").split()
    if not entries:
        raise SecretError("a cluster secret is required (generate one with "
                          "`python -m hacontrol.raft.gensecret`)")
    keys = []
    for n, entry in enumerate(entries, 1):
        m = _ENTRY.match(entry)
        if m is None:
            raise SecretError(
                f"cluster secret key {n} is not of the form {KEY_PREFIX}.<{SALT_BYTES} random "
                f"bytes in hex>.<{KEY_BYTES} random bytes in hex>; secrets of earlier "
                f"versions (a bare password) must be replaced, see docs/security-raft.md")
        salt, key = bytes.fromhex(m.group(2)), bytes.fromhex(m.group(3))
        if len(set(key)) < 16:
            # 32 bytes from a CSPRNG have fewer than 16 distinct values with odds below 2**-50;
            # this catches hand-typed placeholders like 00..00 or 0123..cdef repeated.
            raise SecretError(f"cluster secret key {n} is not random; generate a new one")
        keys.append(RaftKey(salt, key, fernet_frames=m.group(1) == FERNET_PREFIX))
    return keys


def make_encryptor(secret: str) -> FrameCipher:
    """What pysyncobj's connections seal and open frames with, for this secret."""
    return FrameCipher([k.frame_key() for k in parse_secret(secret)])


_lock = threading.Lock()
_installed = False


def install_key_derivation() -> None:
    """Make pysyncobj derive its keys with ``make_encryptor``; idempotent."""
    global _installed
    with _lock:
        if _installed:
            return
        import pysyncobj.encryptor
        import pysyncobj.syncobj

        # syncobj imported getEncryptor by value; patch both names so nothing
        # in the process can still reach the fixed-salt derivation.
        pysyncobj.encryptor.getEncryptor = make_encryptor
        pysyncobj.syncobj.getEncryptor = make_encryptor
        _installed = True

