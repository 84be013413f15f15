"""TCP keep-alive of the agents' sync connections, the same at both ends.

An agent's long poll sits idle on its connection for most of the poll, and while it is in
flight the leader counts the node as alive (`scheduler/liveness.py`). Without keep-alive a
poll whose peer lost power or was cut off by a partition would look alive until the poll
ends. With these settings the kernel asks an idle connection's peer every second and gives
the connection up after `WINDOW_S` without an answer, at no cost to either event loop:
the leader then stops counting the poll, and the agent moves on to another controller.

So a long poll costs nothing in failure detection, and it can be long: an agent of 200
sleeping processes spent most of its idle CPU on one sync round trip a second.
"""

from __future__ import annotations

import socket
from contextlib import suppress

IDLE_S = 1  # silence before the first probe
INTERVAL_S = 1  # between probes
PROBES = 2  # unanswered probes before the kernel gives up
# The longest a connection can be dead before its owner learns it: no packet from the peer
# for this long, and the connection fails. Unacknowledged data (an answer written into a
# dead connection) is given up after the same time (TCP_USER_TIMEOUT).
WINDOW_S = IDLE_S + INTERVAL_S * PROBES


def apply(sock: socket.socket | None) -> None:
    """Turn keep-alive on for `sock` with the settings above (TCP sockets on Linux; a
    socket that refuses an option keeps the kernel's default for it)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", IDLE_S), ("TCP_KEEPINTVL", INTERVAL_S),
                        ("TCP_KEEPCNT", PROBES), ("TCP_USER_TIMEOUT", WINDOW_S * 1000)):
        opt = getattr(socket, name, None)
        if opt is not None:
            options.append((socket.IPPROTO_TCP, opt, value))
    for level, opt, value in options:
        with suppress(OSError):
            sock.setsockopt(level, opt, value)
