"""What pysyncobj's connections seal and open Raft frames with.

pysyncobj calls three methods on its encryptor: ``encrypt_at_time`` on every frame it
sends, and ``extract_timestamp`` then ``decrypt`` on every frame it receives (it refuses
a frame whose timestamp is below the last one's on that connection, and drops the
connection on any error). ``FrameCipher`` answers them for every key of a cluster secret (``keys``): the
first key seals, every key opens.

Keys of the form ``hcraft2`` seal with AES-256-GCM (``FrameKey``). Keys of the form
``hcraft1`` keep Fernet, which earlier versions sent, so a cluster upgrades one replica at
a time and moves to an ``hcraft2`` key by the usual rolling rotation
(docs/security-raft.md). Fernet costs 6 us to seal and 7 to open a 60-byte heartbeat, AES-GCM
0.4 us each (cryptography 50, OpenSSL 4.0, this machine): every Raft message pays it twice, on
the critical path of every write and read (bench/README.md, "The Raft port's cipher").

A ``hcraft2`` frame is::

    0x02 | sender (16 bytes) | counter (8, big-endian) | ciphertext + tag

and the first 25 bytes are authenticated with it. GCM must never see a nonce twice under
one key, and random 96-bit nonces are only safe for about 2**32 frames a key (NIST SP
800-38D, 8.3), which a busy cluster sends in days. So every cipher (one per replica
process) picks a random 128-bit sender id and seals under its own key, derived from the
cluster key and that id (HKDF-SHA256); the nonce is a counter that never repeats within
one process. Two processes share a key only if they drew the same 128-bit id.

The counter is also what ``extract_timestamp`` answers. It grows with every frame a
process sends, so pysyncobj's check refuses any earlier frame replayed into a connection
(a timestamp in seconds refused only frames of earlier seconds); pysyncobj's per-connection
random key already refuses frames from any other connection.
"""

from __future__ import annotations

import base64
import itertools
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = 2
_MARK = bytes([VERSION])  # Fernet tokens are base64 text: they start with b"g", never 0x02
SENDER_BYTES = 16
_HEADER = struct.Struct(f">c{SENDER_BYTES}sQ")  # mark, sender, counter
_NONCE_PAD = bytes(4)  # GCM's 96-bit nonce: 4 zero bytes and the 64-bit counter
_CLUSTER_INFO = b"hacontrol raft frames v2"
_SENDER_INFO = b"hacontrol raft frames v2 sender"
# Senders whose key is kept, per cluster key: a replica hears its peers, each of which
# draws a new id when it restarts. A frame under an id not kept costs one HKDF (~20 us).
MAX_SENDERS = 64


class FrameError(InvalidToken):
    """A frame no key of this cluster secret opens, or not a frame at all. (A subclass of
    Fernet's error, so callers catch one type whatever the key's version.)"""


def fernet_key(salt: bytes, key: bytes, info: bytes) -> Fernet:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)
    return Fernet(base64.urlsafe_b64encode(derived))


class FrameKey:
    """One ``hcraft2`` cluster key: seals as one sender, opens frames of any sender."""

    def __init__(self, salt: bytes, key: bytes) -> None:
        self._cluster = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                             info=_CLUSTER_INFO).derive(key)
        self._sender = os.urandom(SENDER_BYTES)
        self._own = self._aead(self._sender)
        # next() on itertools.count is atomic under the GIL: no two frames share a counter
        self._counter = itertools.count(1)
        self._senders: dict[bytes, AESGCM] = {}

    def _aead(self, sender: bytes) -> AESGCM:
        return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=sender,
                           info=_SENDER_INFO).derive(self._cluster))

    def seal(self, data: bytes) -> bytes:
        header = _HEADER.pack(_MARK, self._sender, next(self._counter))
        return header + self._own.encrypt(_NONCE_PAD + header[17:], data, header)

    def open(self, frame: bytes) -> tuple[int, bytes]:
        """(counter, data); raises FrameError unless this key sealed it."""
        if len(frame) < _HEADER.size + 16 or frame[:1] != _MARK:
            raise FrameError("not a version 2 frame")
        header = frame[:_HEADER.size]
        _mark, sender, counter = _HEADER.unpack(header)
        aead = self._senders.get(sender)
        known = aead is not None
        if aead is None:
            aead = self._aead(sender)
        try:
            data = aead.decrypt(_NONCE_PAD + header[17:], frame[_HEADER.size:], header)
        except InvalidTag:
            raise FrameError("frame not sealed with this key") from None
        if not known:
            # Only senders that proved the key are kept, so forged ids cannot flush them.
            if len(self._senders) >= MAX_SENDERS:
                self._senders.pop(next(iter(self._senders)))
            self._senders[sender] = aead
        return counter, data


class FrameCipher:
    """pysyncobj's encryptor for a cluster secret's keys (``keys.parse_secret``)."""

    def __init__(self, keys: list[FrameKey | Fernet]) -> None:
        """`keys`: at least one; the first seals."""
        self._first = keys[0]
        self._v2 = [k for k in keys if isinstance(k, FrameKey)]
        fernets = [k for k in keys if isinstance(k, Fernet)]
        self._v1 = MultiFernet(fernets) if fernets else None  # seals with the first listed

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        if isinstance(self._first, FrameKey):
            return self._first.seal(data)  # the counter stands for the time (above)
        assert self._v1 is not None
        return self._v1.encrypt_at_time(data, current_time)

    def _open_v2(self, token: bytes) -> tuple[int, bytes]:
        for key in self._v2:
            try:
                return key.open(token)
            except FrameError:
                continue
        raise FrameError("frame not sealed with any key of this cluster secret")

    def _fernet(self) -> MultiFernet:
        if self._v1 is None:
            raise FrameError("a version 1 frame, and this cluster secret has no hcraft1 key")
        return self._v1

    def extract_timestamp(self, token: bytes) -> int:
        # A version 2 frame's counter, from the whole frame opened (0.4 us with GCM): it is
        # only worth what the tag behind it proves. (Fernet's checks its HMAC.)
        if token[:1] == _MARK:
            return self._open_v2(token)[0]
        return self._fernet().extract_timestamp(token)

    def decrypt(self, token: bytes) -> bytes:
        if token[:1] == _MARK:
            return self._open_v2(token)[1]
        return self._fernet().decrypt(token)
