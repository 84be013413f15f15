"""Listening sockets the allocation's processes inherit (socket activation).

Acquired before the first launch and held across restarts, so connections
wait in the accept queue while a process is down; released when the runner
ends.
"""

from __future__ import annotations

import socket

from hacontrol.agent.hooks import HookHost, Outcome
from hacontrol.agent.process import Handle, LaunchConfig, LaunchFailed
from hacontrol.agent.sockets import SocketRegistry


class SocketsHook:
    __slots__ = ("_host", "_key", "_registry", "_socks")

    def __init__(self, host: HookHost, registry: SocketRegistry) -> None:
        self._host = host
        self._registry = registry
        self._key: str | None = None
        self._socks: list[socket.socket] = []

    async def prestart(self, config: LaunchConfig) -> None:
        spec = self._host.spec
        if spec.sockets and self._key is None:
            key = spec.socket_key or f"alloc:{spec.alloc_id}"
            try:
                self._socks = self._registry.acquire(key, spec.alloc_id, spec.sockets)
            except (OSError, ValueError) as exc:
                raise LaunchFailed(f"cannot bind sockets: {exc}") from None
            self._key = key
        config.fds = [s.fileno() for s in self._socks]
        config.fd_names = [s.name for s in spec.sockets]

    def poststart(self, handle: Handle) -> None:
        pass

    async def exited(self, outcome: Outcome) -> None:
        pass

    def stop(self) -> None:
        if self._key is not None:
            self._registry.release(self._key, self._host.spec.alloc_id)
            self._key = None
            self._socks = []
