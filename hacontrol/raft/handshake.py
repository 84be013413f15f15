"""Limits on Raft connections that have not yet said who they are.

pysyncobj keeps an accepted connection in ``TCPTransport._unknownConnections``
until it has sent a decryptable key-exchange frame and then a member address.
Upstream it keeps such a connection forever (our ``connectionTimeout`` is
effectively infinite, see ``RaftTuning``) and accepts any number of them, so
idle or trickling sockets could pile up until the replica runs out of file
descriptors. The guard closes a pending connection that has not finished the
handshake within a deadline, and when too many are pending closes the oldest
one: evicting instead of refusing means an attacker cannot hold the slots and
keep a restarted peer from getting back in, since a peer's whole handshake
takes one round trip.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from hacontrol.raft.listen import reported_bind

logger = logging.getLogger(__name__)

# A peer's handshake is two frames and one round trip: milliseconds on a LAN.
# 3 s leaves room for a replica whose tick thread is busy (a snapshot load)
# while still reclaiming an idle socket quickly.
DEFAULT_HANDSHAKE_TIMEOUT = 3.0
# Peers reconnect one connection at a time; a handful of members plus admin
# tools never get near this, and 64 sockets are cheap to hold.
DEFAULT_MAX_PENDING = 64
# pysyncobj listens with a backlog of 5 and accepts one connection per poll round, so a
# burst of connects overflowed the kernel's queue: its SYNs were dropped and the clients
# retried 1 s later (40 connects in a row to one replica stalled 1 s every 6-10 of them).
# The queue now holds a burst until the tick thread takes it.
LISTEN_BACKLOG = 128

_lock = threading.Lock()
_installed: tuple[float, int] | None = None


def installed_limits() -> tuple[float, int] | None:
    """(handshake timeout, pending cap) in force, or None before installation."""
    return _installed


def install_handshake_guard(timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                            max_pending: int = DEFAULT_MAX_PENDING) -> None:
    """Patch pysyncobj's TCP transport; idempotent, call before any SyncObj."""
    global _installed
    if timeout <= 0 or max_pending <= 0:
        raise ValueError("handshake timeout and pending cap must be positive")
    with _lock:
        if _installed is not None:
            if _installed != (timeout, max_pending):
                logger.warning("raft handshake guard already installed with %s; ignoring %s",
                               _installed, (timeout, max_pending))
            return
        _patch_transport(timeout, max_pending)
        _installed = (timeout, max_pending)


# A flood closes connections by the thousand; one line a second says as much.
_REPORT_PERIOD = 1.0
_next_report = 0.0
_unreported = 0


def _report(why: str) -> None:
    global _next_report, _unreported
    now = time.monotonic()
    if now < _next_report:
        _unreported += 1
        return
    logger.warning("raft connection closed before its handshake completed: %s "
                   "(%d more since the last report)", why, _unreported)
    _next_report = now + _REPORT_PERIOD
    _unreported = 0


def _patch_transport(timeout: float, max_pending: int) -> None:
    from pysyncobj import tcp_server, transport

    cls = transport.TCPTransport
    orig_new = cls._onNewIncomingConnection
    orig_tick = cls._onTick
    server_cls = tcp_server.TcpServer
    orig_bind = server_cls.bind

    def bind(self: Any) -> None:
        reported_bind(self, orig_bind)
        self._TcpServer__socket.listen(LISTEN_BACKLOG)  # a second listen() only resizes

    def drop(self: Any, conn: Any, why: str) -> None:
        _report(why)
        self._unknownConnections.discard(conn)
        conn.disconnect()

    def onNewIncomingConnection(self: Any, conn: Any) -> None:
        pending = self._unknownConnections
        while len(pending) >= max_pending:
            oldest = min(pending, key=lambda c: getattr(c, "_hc_accepted", 0.0))
            drop(self, oldest, f"more than {max_pending} pending")
        conn._hc_accepted = time.monotonic()
        orig_new(self, conn)

    def onTick(self: Any) -> None:
        orig_tick(self)
        if not self._unknownConnections:
            return
        now = time.monotonic()
        for conn in list(self._unknownConnections):
            if now - getattr(conn, "_hc_accepted", now) > timeout:
                drop(self, conn, f"no handshake within {timeout:g} s")

    cls._onNewIncomingConnection = onNewIncomingConnection
    cls._onTick = onTick
    server_cls.bind = bind
