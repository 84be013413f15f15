"""The record of a run: every client operation, every fault, every status poll.

Saved as JSON lines so a failing run can be re-checked offline (`python -m chaos check`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

OK = "ok"  # completed, and its output is what the cluster answered
FAIL = "fail"  # definitely not applied
UNKNOWN = "unknown"  # timed out or the connection broke: may or may not have taken effect


@dataclass
class Op:
    id: int
    client: int
    f: str  # put_job | scale | delete | put_quota | read_job | read_ns
    key: str  # the namespace: the unit of linearizability (quota ties its jobs together)
    input: dict[str, Any]
    invoke: float  # seconds since the run started
    complete: float | None = None
    status: str = UNKNOWN
    output: Any = None
    replica: str = ""  # the replica asked first
    replicas: list[str] = field(default_factory=list)  # every replica tried
    idem: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "op", **asdict(self)}


@dataclass
class History:
    seed: int
    nemesis: str
    backend: str
    ops: list[Op] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    polls: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        with path.open("w") as f:
            f.write(json.dumps({"type": "meta", "seed": self.seed, "nemesis": self.nemesis,
                                "backend": self.backend, **self.meta}) + "\n")
            for op in self.ops:
                f.write(json.dumps(op.to_json()) + "\n")
            for ev in self.faults:
                f.write(json.dumps({"type": "fault", **ev}) + "\n")
            for p in self.polls:
                f.write(json.dumps({"type": "poll", **p}) + "\n")
            f.write(json.dumps({"type": "final", **self.final}) + "\n")

    @classmethod
    def load(cls, path: Path) -> History:
        h = cls(seed=0, nemesis="", backend="")
        for line in path.read_text().splitlines():
            d = json.loads(line)
            kind = d.pop("type")
            if kind == "meta":
                h.seed, h.nemesis, h.backend = d.pop("seed"), d.pop("nemesis"), d.pop("backend")
                h.meta = d
            elif kind == "op":
                h.ops.append(Op(**d))
            elif kind == "fault":
                h.faults.append(d)
            elif kind == "poll":
                h.polls.append(d)
            elif kind == "final":
                h.final = d
        return h
