"""Listening sockets shared by the allocations of one key (socket activation).

The agent binds each socket once per key and keeps it open while any
allocation of the key is supervised, including across crashes and restarts
of its processes: connections that arrive while a process is down wait in
the kernel's accept queue instead of being refused, and a process that dies
loses only the connections it had already accepted.

Limitation: after an agent restart, adopted processes keep their inherited
sockets but the new agent cannot get hold of them, so a new process of the
same key would fail to bind (EADDRINUSE) until the adopted ones are gone.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from hacontrol.model.spec import SocketSpec

LISTEN_BACKLOG = 4096


@dataclass
class _Shared:
    specs: list[SocketSpec]
    socks: list[socket.socket]
    holders: set[str] = field(default_factory=set)


def bind_listening(spec: SocketSpec, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((spec.host, spec.port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class SocketRegistry:
    """Key -> bound sockets, reference-counted by the allocations holding them."""

    def __init__(self) -> None:
        self._shared: dict[str, _Shared] = {}

    def acquire(self, key: str, holder: str, specs: list[SocketSpec]) -> list[socket.socket]:
        """The key's sockets, binding them on first use; raises OSError if binding fails."""
        shared = self._shared.get(key)
        if shared is None:
            socks: list[socket.socket] = []
            try:
                for spec in specs:
                    socks.append(bind_listening(spec))
            except OSError:
                for s in socks:
                    s.close()
                raise
            shared = _Shared(list(specs), socks)
            self._shared[key] = shared
        elif [(s.name, s.host, s.port) for s in shared.specs] != [
            (s.name, s.host, s.port) for s in specs
        ]:
            raise ValueError(f"sockets of key {key!r} differ from those already bound")
        shared.holders.add(holder)
        return list(shared.socks)

    def release(self, key: str, holder: str) -> None:
        shared = self._shared.get(key)
        if shared is None:
            return
        shared.holders.discard(holder)
        if not shared.holders:
            for s in shared.socks:
                s.close()
            del self._shared[key]

    def names(self, key: str) -> list[str]:
        shared = self._shared.get(key)
        return [s.name for s in shared.specs] if shared else []

    def close_all(self) -> None:
        for shared in self._shared.values():
            for s in shared.socks:
                s.close()
        self._shared.clear()

    def keys(self) -> list[str]:
        return list(self._shared)
