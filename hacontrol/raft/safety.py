"""Hardening of pysyncobj's wire and disk formats.

pysyncobj unpickles every inbound Raft frame, its journal metadata and (by
default) its dump file. A pickle is a program, so anyone able to deliver one
runs code in the replica. The fence below:

* swaps every unpickling entry point pysyncobj uses for a restricted
  unpickler that can only build primitive containers;
* makes pysyncobj pickle with protocol 4, where bytes, sets and frozensets
  have native opcodes and need no ``find_class`` at all;
* refuses a frame as soon as its 4-byte length prefix announces something
  negative or larger than the cap, before the body is buffered;
* bounds zlib decompression of a frame so a small frame cannot expand into
  gigabytes.

Encryption (pysyncobj's ``password``) is still required: the fence removes
code execution, not the ability of a peer to send forged Raft messages.
``install_fence`` therefore also installs the per-cluster key derivation
(``keys``) and the limits on connections that have not authenticated yet
(``handshake``).
"""

from __future__ import annotations

import io
import logging
import pickle
import socket
import struct
import threading
import types
import zlib
from collections.abc import Callable
from typing import Any

from hacontrol.raft.handshake import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_MAX_PENDING,
    install_handshake_guard,
)
from hacontrol.raft.keys import SecretError, install_key_derivation, parse_secret

__all__ = ["SecretError"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
# Data a peer has not acknowledged for this long aborts the connection (TCP_USER_TIMEOUT,
# which also bounds a connect's SYN retries). Keepalive alone never fires on a link with
# data in flight, and pysyncobj's own idle timeout must stay off (config.py): without this
# a link cut by a partition stayed in TCP's exponential retransmission backoff after the
# heal, and a replica caught up 37 s to over 60 s later (compose chaos, partition-leader).
# With it the link is dropped and redialled every connection_retry_time. A healthy peer
# acknowledges within milliseconds; a paused one is redialled when it resumes.
TCP_USER_TIMEOUT_MS = 2000
PICKLE_PROTOCOL = 4
_INFLATE_STEP = 1024 * 1024

_PREFIX = struct.Struct("i")  # pysyncobj packs with native 'i': signed, 4 bytes


class FenceError(pickle.UnpicklingError):
    """A pickle asked for something outside the allowlist."""


def _latin1_encode(text: Any, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Protocol 2 encodes bytes as _codecs.encode(str, 'latin1'). Any other codec
    # is refused: chaining e.g. 'hex' through REDUCE doubles memory per step.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise FenceError("_codecs.encode is only allowed for latin1 text")
    return text.encode("latin1", errors)


def _bytes_ctor(*args: Any) -> bytes:
    # Protocol 2 pickles b"" as bytes(); bytes(<huge int>) would allocate.
    if not args:
        return b""
    if len(args) == 1 and isinstance(args[0], bytes | bytearray | list | tuple):
        return bytes(args[0])
    raise FenceError("bytes() only accepts an existing byte sequence")


# What pysyncobj's own messages need, found by logging find_class while a
# 3-replica cluster ran: with protocol 4 (what we send) nothing at all; with
# pysyncobj's stock protocol 2 only _codecs.encode (non-empty bytes) and
# bytes() (b"", e.g. the last chunk of a snapshot transfer). Accepting
# protocol 2 keeps journals and peers from before the fence readable.
_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _bytes_ctor,
    ("__builtin__", "bytes"): _bytes_ctor,
}

# Set by tests to learn what a live cluster really asks for.
find_class_log: list[tuple[str, str]] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can build only primitive values."""

    def find_class(self, module: str, name: str) -> Any:
        if find_class_log is not None:
            find_class_log.append((module, name))
        target = _ALLOWED.get((module, name))
        if target is None:
            logger.warning("raft pickle refused: global %s.%s", module, name)
            raise FenceError(f"refused to unpickle global {module}.{name}")
        return target

    def persistent_load(self, pid: Any) -> Any:
        raise FenceError("persistent ids are not allowed")


def safe_loads(data: bytes | bytearray | memoryview | str) -> Any:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return RestrictedUnpickler(io.BytesIO(bytes(data))).load()


def safe_load(file: Any) -> Any:
    return RestrictedUnpickler(file).load()


def safe_dumps(obj: Any, protocol: int | None = None) -> bytes:
    return pickle.dumps(obj, PICKLE_PROTOCOL)


def safe_dump(obj: Any, file: Any, protocol: int | None = None) -> None:
    pickle.dump(obj, file, PICKLE_PROTOCOL)


def _refuse(*_args: Any, **_kwargs: Any) -> Any:
    raise FenceError("the unrestricted pickle fallback is disabled")


def _make_pickle_shim() -> types.SimpleNamespace:
    # pysyncobj.pickle calls ``pickle.loads``/``pickle._loads`` through its module
    # global; replacing that global also fences function objects other modules
    # captured before the fence was installed.
    return types.SimpleNamespace(
        loads=safe_loads,
        load=safe_load,
        _loads=_refuse,
        _load=_refuse,
        dumps=safe_dumps,
        dump=safe_dump,
        Unpickler=RestrictedUnpickler,
        _Unpickler=RestrictedUnpickler,
        UnpicklingError=pickle.UnpicklingError,
        PicklingError=pickle.PicklingError,
        HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL,
        DEFAULT_PROTOCOL=PICKLE_PROTOCOL,
    )


_STORED_MAX = 0xFFFF  # a stored deflate block holds at most this many bytes
STORED_BELOW = 4096  # frames up to this size are sent stored (see _BoundedZlib.compress)


def stored_zlib(data: bytes) -> bytes:
    """``data`` as a zlib stream of stored blocks (RFC 1950/1951), without deflate's per-call
    state setup that ``zlib.compress(data, 0)`` still pays."""
    view = memoryview(data)
    size = len(view)
    parts: list[bytes | memoryview] = [b"\x78\x01"]
    pos = 0
    while True:
        chunk = view[pos:pos + _STORED_MAX]
        pos += len(chunk)
        final = pos >= size
        parts.append(_STORED_HEADER.pack(int(final), len(chunk), len(chunk) ^ 0xFFFF))
        parts.append(chunk)
        if final:
            break
    parts.append(_ADLER.pack(zlib.adler32(view)))
    return b"".join(parts)


_STORED_HEADER = struct.Struct("<BHH")
_ADLER = struct.Struct(">I")


class _BoundedZlib:
    """Stand-in for the ``zlib`` module inside pysyncobj.tcp_connection."""

    def __init__(self, max_output: int) -> None:
        self.max_output = max_output

    def compress(self, data: bytes, level: int = -1) -> bytes:
        # Frames stay zlib streams (every peer inflates them). Deflate's setup per frame was
        # 4 % of a loaded leader's samples (py-spy, 64 writers); most frames (heartbeats,
        # replies, probes, small appends) are small, and stored they cost less to build and
        # encrypt: pickle+zlib+Fernet round trip 46 -> 37 us for a heartbeat, 176 -> 108 us
        # for a 2.3 KB append. Above a few KB, Fernet's cost of the larger stored frame
        # outweighed deflate's (17 KB append: 245 us deflated, 402 us stored). With AES-GCM
        # (hcraft2 keys) stored is cheaper at every size (17 KB: 41 us stored, 73 deflated),
        # but deflate stays above 4 KB for the wire: that append deflates to 1.5 KB, 0.13 ms
        # less on a 1 Gbit/s link, and snapshots travel as such frames too.
        if len(data) <= STORED_BELOW:
            return stored_zlib(data)
        return zlib.compress(data, level)

    def decompress(self, data: bytes) -> bytes:
        # Inflate in steps so a bomb is stopped at the cap, not after one
        # oversized output buffer has been allocated.
        d = zlib.decompressobj()
        out = bytearray()
        pending = data
        while not d.eof:
            chunk = d.decompress(pending, _INFLATE_STEP)
            pending = d.unconsumed_tail
            if not chunk and not pending:
                break
            out += chunk
            if len(out) > self.max_output:
                logger.warning("raft frame refused: inflates beyond %d bytes", self.max_output)
                raise ValueError("decompressed frame too large")
        if not d.eof:
            raise ValueError("truncated compressed frame")
        return bytes(out)


_lock = threading.Lock()
_installed_cap: int | None = None


def installed_frame_cap() -> int | None:
    return _installed_cap


def check_prefixes(buf: bytes, pos: int, cap: int) -> tuple[int, int | None]:
    """Walk complete frames from ``pos``.

    Returns (offset of the first incomplete frame, offending length or None).
    """
    n = len(buf)
    while n - pos >= 4:
        (length,) = _PREFIX.unpack_from(buf, pos)
        if length < 0 or length > cap:
            return pos, length
        if n - pos - 4 < length:
            break
        pos += 4 + length
    return pos, None


def _patch_tcp_connection(cap: int) -> None:
    from pysyncobj import tcp_connection

    cls = tcp_connection.TcpConnection
    orig_read = cls._TcpConnection__processRead
    orig_keepalive = cls.setSockoptKeepalive

    def setSockoptKeepalive(self: Any) -> None:
        # pysyncobj calls this on every socket it dials or accepts, before connecting.
        orig_keepalive(self)
        sock = self._TcpConnection__socket
        if (sock is not None and hasattr(socket, "TCP_USER_TIMEOUT")
                and sock.family in (socket.AF_INET, socket.AF_INET6)):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)

    orig_parse = cls._TcpConnection__processParseMessage

    def processRead(self: Any) -> bool:
        if not self._TcpConnection__readBuffer:
            self._hc_scan = 0
        more = orig_read(self)
        buf = self._TcpConnection__readBuffer
        pos, bad = check_prefixes(buf, getattr(self, "_hc_scan", 0), cap)
        if bad is not None:
            logger.warning(
                "raft frame refused: length prefix %d outside [0, %d]; disconnecting", bad, cap
            )
            self.disconnect()
            self._hc_scan = 0
            return False
        self._hc_scan = pos
        # Stop reading (without disconnecting) once a full frame's worth is
        # buffered, so parsing runs before a fast sender can pile up more.
        if len(buf) > cap:
            return False
        return bool(more)

    def processParseMessage(self: Any) -> Any:
        before = len(self._TcpConnection__readBuffer)
        message = orig_parse(self)
        consumed = before - len(self._TcpConnection__readBuffer)
        if consumed > 0:
            self._hc_scan = max(0, getattr(self, "_hc_scan", 0) - consumed)
        return message

    cls._TcpConnection__processRead = processRead
    cls.setSockoptKeepalive = setSockoptKeepalive
    cls._TcpConnection__processParseMessage = processParseMessage
    tcp_connection.zlib = _BoundedZlib(cap)


def install_fence(max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                  handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                  max_pending: int = DEFAULT_MAX_PENDING) -> None:
    """Fence pysyncobj's pickling, framing, key derivation and unauthenticated
    connections; idempotent, call before any SyncObj."""
    global _installed_cap
    install_key_derivation()
    install_handshake_guard(handshake_timeout, max_pending)
    with _lock:
        if _installed_cap is not None:
            if _installed_cap != max_frame_bytes:
                logger.warning(
                    "raft fence already installed with cap %d; ignoring %d",
                    _installed_cap,
                    max_frame_bytes,
                )
            return
        if max_frame_bytes <= 0:
            raise ValueError("max_frame_bytes must be positive")

        import pysyncobj.journal
        import pysyncobj.pickle as pso_pickle
        import pysyncobj.serializer  # noqa: F401  (uses pso_pickle.load via module attr)
        import pysyncobj.syncobj  # noqa: F401
        import pysyncobj.tcp_connection  # noqa: F401

        pso_pickle.pickle = _make_pickle_shim()
        pso_pickle.loads = safe_loads
        pso_pickle.load = safe_load
        pso_pickle.dumps = safe_dumps
        pso_pickle.dump = safe_dump
        # journal.py imported these by value.
        pysyncobj.journal.loads = safe_loads
        pysyncobj.journal.dumps = safe_dumps
        _patch_tcp_connection(max_frame_bytes)
        restore_inet_ntop()
        _installed_cap = max_frame_bytes


def restore_inet_ntop() -> None:
    """Undo pysyncobj's process-wide replacement of ``socket.inet_ntop``.

    pysyncobj's win_inet_pton module assigns a Windows-only ``inet_ntop`` to the socket
    module on every platform; on Linux it raises TypeError for anyone who calls it later
    (psutil's connection listing, IPv6 address formatting in other libraries).
    """
    import _socket
    import socket

    import pysyncobj.win_inet_pton  # noqa: F401  (make sure the damage is done first)

    socket.inet_ntop = _socket.inet_ntop


def require_secret(secret: str | None) -> str:
    """The Raft port is never run in clear: pysyncobj's encryptor is mandatory (ours,
    ``cipher``), keyed by a cluster secret of random keys with their own salts (``keys``).

    Raises SecretError with a message fit for the operator.
    """
    if secret is None:
        secret = ""
    parse_secret(secret)
    return secret
