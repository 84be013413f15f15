"""The cluster secret and the Fernet keys the Raft port encrypts with.

A cluster secret is one or more keys, separated by whitespace, each written
``hcraft1.<salt>.<key>``: 16 random bytes of salt and 32 random bytes of key,
in hex. The first key encrypts what this replica sends; every listed key is
accepted on what it receives, which is what makes a rolling rotation possible
(``docs/security-raft.md``).

pysyncobj derives its Fernet key with PBKDF2 and a salt fixed in its source,
so the same password gives the same key in every cluster and a precomputed
dictionary works against all of them. Here the key material is 32 random
bytes, so a slow KDF buys nothing; HKDF-SHA256 with a per-cluster random salt,
generated together with the key and stored beside it, is enough to give every
cluster its own Fernet key. The salt travels inside the secret so that every
place that hands a replica its secret (a file, an environment variable) keeps
carrying exactly one value.
"""

from __future__ import annotations

import base64
import re
import secrets
import threading
from dataclasses import dataclass

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_PREFIX = "hcraft1"
SALT_BYTES = 16
KEY_BYTES = 32
_HKDF_INFO = b"hacontrol raft fernet v1"
_ENTRY = re.compile(rf"^{KEY_PREFIX}\.([0-9a-f]{{{2 * SALT_BYTES}}})\.([0-9a-f]{{{2 * KEY_BYTES}}})$")


class SecretError(ValueError):
    """The cluster secret is missing or too weak to run the Raft port."""


@dataclass(frozen=True)
class RaftKey:
    salt: bytes
    key: bytes

    def fernet(self) -> Fernet:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=self.salt,
                       info=_HKDF_INFO).derive(self.key)
        return Fernet(base64.urlsafe_b64encode(derived))


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
        salt, key = bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2))
        if len(set(key)) < 16:
            # 32 bytes from a CSPRNG have fewer than 16 distinct values with odds below 2**-50;
            # this catches hand-typed placeholders like 00..00 or 0123..cdef repeated.
            raise SecretError(f"cluster secret key {n} is not random; generate a new one")
        keys.append(RaftKey(salt, key))
    return keys


def make_encryptor(secret: str) -> MultiFernet:
    """What pysyncobj's connections encrypt and decrypt with, for this secret."""
    return MultiFernet([k.fernet() for k in parse_secret(secret)])


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

