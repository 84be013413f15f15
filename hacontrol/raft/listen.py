"""Where a replica's Raft port listens, and whether it does yet.

pysyncobj binds the wildcard address (0.0.0.0) on the Raft address's port unless told
otherwise. A wildcard bind fails while any socket on any local address holds that port,
an outgoing connection's ephemeral port included: a replica given 127.0.0.5:36023 was
seen never to start, because a client's connection from 127.0.0.1:36023 to another replica
lived through the whole run (its tick thread retried the bind every second, silently, and
never ticked). Given an IPv4 address, the replica now binds that address alone, which such
a connection does not hold, and which is also what an operator who names an address
expects: the Raft port is not open on every interface. A host name keeps the wildcard (in
a container the name may resolve to an address the replica does not hold); so does an
IPv6 address, whose literal pysyncobj does not parse.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


def bind_address(raft_addr: str) -> str | None:
    """pysyncobj's `bindAddress` for `raft_addr` (None: its default, the wildcard)."""
    host, sep, port = raft_addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return raft_addr if ip.version == 4 else None


def reported_bind(server: Any, bind: Callable[[Any], None]) -> None:
    """`bind(server)` for pysyncobj's TcpServer `server`, keeping its error on it.

    pysyncobj retries a failed bind every second and says nothing; the error kept here is
    what the replica's health and stall report show (`not_listening`), and each new one is
    logged once."""
    where = f"{server._TcpServer__host}:{server._TcpServer__port}"
    try:
        bind(server)
    except OSError as exc:
        error = f"cannot listen on {where}: {exc.strerror or exc}"
        if error != getattr(server, "hc_bind_error", None):
            logger.error("raft %s; retrying every second", error)
        server.hc_bind_error = error
        raise
    if getattr(server, "hc_bind_error", None) is not None:
        logger.warning("raft listens on %s now (was: %s)", where, server.hc_bind_error)
        server.hc_bind_error = None


def not_listening(node: Any) -> str | None:
    """Why `node` (a pysyncobj SyncObj) does not listen on its Raft port yet; None once
    it does. Until then its tick thread only retries the bind: it neither ticks nor
    answers its peers."""
    transport = getattr(node, "_SyncObj__transport", None)
    if transport is None or transport.ready:
        return None
    server = getattr(transport, "_server", None)
    error = getattr(server, "hc_bind_error", None)
    return str(error) if error else "its Raft port is not bound yet"
