"""The ports of this node's allocations: static ones as asked, dynamic ones picked here.

A dynamic port is taken from `DYNAMIC_PORTS` (below Linux's default ephemeral range,
32768-60999, so outgoing connections do not take them first), skipping every port another
allocation of this node holds, and kept only if it can be bound at that moment: free at
bind time, which is the most anyone can promise before the allocation binds it itself.
The choice is written next to the allocation's pid record (`ports.json`), so a restart of
the allocation, or of the agent that re-adopts it, keeps the same ports and the registry
does not churn.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable
from pathlib import Path

from hacontrol.agent.jitter import uniform
from hacontrol.model.spec import PortSpec
from hacontrol.model.spec_ports import parse_reported_ports
from hacontrol.tls.files import private_opener

log = logging.getLogger(__name__)

DYNAMIC_PORTS = (20000, 32000)
PORTS_FILE = "ports.json"


class NoFreePort(Exception):
    """Every port of the dynamic range is held here or in use on the node."""


def can_bind(port: int) -> bool:
    """Whether a TCP listener could bind `port` on every IPv4 address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


class PortBook:
    """Which ports each allocation of this node holds."""

    def __init__(self, dynamic: tuple[int, int] = DYNAMIC_PORTS,
                 is_free: Callable[[int], bool] = can_bind,
                 rng: Callable[[], float] = uniform) -> None:
        self.low, self.high = dynamic
        self.is_free = is_free
        self.rng = rng
        self.held: dict[str, dict[str, int]] = {}

    def get(self, alloc_id: str) -> dict[str, int] | None:
        return self.held.get(alloc_id)

    def recall(self, alloc_id: str, wanted: tuple[PortSpec, ...], alloc_dir: Path) -> None:
        """Hold what an earlier run recorded for the allocation, if it still fits its spec
        (called for every assignment before any new port is picked, so a port a running,
        re-adopted allocation holds is never handed to another)."""
        if alloc_id in self.held:
            return
        recorded = _read(alloc_dir)
        if recorded is not None and _fits(recorded, wanted):
            self.held[alloc_id] = recorded

    def ports_for(self, alloc_id: str, wanted: tuple[PortSpec, ...],
                  alloc_dir: Path) -> dict[str, int]:
        """The allocation's ports by name: held already, recorded, or picked now (and
        recorded). Raises `NoFreePort`."""
        self.recall(alloc_id, wanted, alloc_dir)
        ports = self.held.get(alloc_id)
        if ports is not None:
            return ports
        taken = {p for other in self.held.values() for p in other.values()}
        taken.update(p.static for p in wanted if p.static is not None)
        ports = {}
        for p in wanted:
            if p.static is not None:
                ports[p.name] = p.static
            else:
                ports[p.name] = self._pick(taken)
                taken.add(ports[p.name])
        _write(alloc_dir, ports)
        self.held[alloc_id] = ports
        return ports

    def retain(self, alloc_ids: Iterable[str]) -> None:
        """Forget the ports of allocations no longer on this node."""
        keep = set(alloc_ids)
        for alloc_id in [a for a in self.held if a not in keep]:
            del self.held[alloc_id]

    def _pick(self, taken: set[int]) -> int:
        # From a random point of the range: a port just given up (its old owner may still
        # have connections in TIME_WAIT) is not the next one handed out.
        size = self.high - self.low + 1
        start = min(int(self.rng() * size), size - 1)
        for k in range(size):
            port = self.low + (start + k) % size
            if port not in taken and self.is_free(port):
                return port
        raise NoFreePort(f"no free port in {self.low}-{self.high}")


def _fits(recorded: dict[str, int], wanted: tuple[PortSpec, ...]) -> bool:
    if set(recorded) != {p.name for p in wanted}:
        return False
    return all(p.static is None or recorded[p.name] == p.static for p in wanted)


def _read(alloc_dir: Path) -> dict[str, int] | None:
    try:
        raw = json.loads((alloc_dir / PORTS_FILE).read_text())
        return parse_reported_ports(raw, PORTS_FILE)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged record: pick again
        log.warning("ignoring %s in %s: %s", PORTS_FILE, alloc_dir, exc)
        return None


def _write(alloc_dir: Path, ports: dict[str, int]) -> None:
    # Written then renamed, as the pid record is: a crash never leaves half a file.
    alloc_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = alloc_dir / (PORTS_FILE + ".tmp")
    with open(tmp, "w", opener=private_opener) as f:
        f.write(json.dumps(ports))
    os.replace(tmp, alloc_dir / PORTS_FILE)
