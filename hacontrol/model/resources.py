"""Amounts of capacity: what a job asks for, what a namespace may use, what it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resources:
    """Per-allocation ask (and a node's capacity)."""

    cpu: float = 0.1  # cores
    memory_mb: int = 64
    pids: int | None = None  # enforced by the agent, not used for placement

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"cpu": self.cpu, "memory_mb": self.memory_mb}
        if self.pids is not None:
            d["pids"] = self.pids
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Resources:
        """From trusted data (a snapshot); `parse_resources` checks untrusted input."""
        pids = d.get("pids")
        return cls(float(d["cpu"]), int(d["memory_mb"]), None if pids is None else int(pids))


@dataclass(frozen=True)
class Quota:
    """Upper bounds for a namespace; None means unlimited."""

    cpu: float | None = None
    memory_mb: int | None = None
    processes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": self.cpu, "memory_mb": self.memory_mb, "processes": self.processes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quota:
        return cls(d.get("cpu"), d.get("memory_mb"), d.get("processes"))


@dataclass(frozen=True)
class Usage:
    cpu: float = 0.0
    memory_mb: int = 0
    processes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"cpu": round(self.cpu, 6), "memory_mb": self.memory_mb, "processes": self.processes}

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu + other.cpu, self.memory_mb + other.memory_mb,
                     self.processes + other.processes)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.cpu - other.cpu, self.memory_mb - other.memory_mb,
                     self.processes - other.processes)

    def as_ints(self) -> tuple[int, int, int]:
        """(micro-cores, MiB, processes): integer sums do not depend on their order, so a
        running total and a recomputation after a restore agree to the last bit."""
        return (round(self.cpu * 1_000_000), self.memory_mb, self.processes)
