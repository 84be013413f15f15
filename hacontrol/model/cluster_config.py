"""The cluster's own settings, kept in the replicated state and changed live through the log
(`cluster_config_put`, `PUT /v1/operator/config`).

For now one section: the weights and thresholds of the cluster health score
(`hacontrol/health/score.py`). Every field has a default, so a cluster that never set its
config scores with `ClusterConfig()`, and a config written by a newer version with fields
this one does not know is refused on input but read leniently from the state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .checks import no_unknown, number, obj
from .errors import invalid


@dataclass(frozen=True)
class HealthWeights:
    """Penalties (points off 100) per item, and what counts as an item.

    Each reason's penalty is `weight x count`, capped at `max_per_reason`, so that one
    kind of trouble (a hundred failed allocations) cannot hide every other."""

    replica_down: float = 20.0  # per replica not answering or not healthy
    replica_lagging: float = 5.0  # per replica `lag_entries` or more behind the leader
    no_quorum_margin: float = 15.0  # exactly a majority up: one more loss stops writes
    quorum_lost: float = 60.0  # fewer than a majority up
    no_leader: float = 50.0
    node_down: float = 10.0  # per node marked down
    node_draining: float = 2.0  # per node draining
    allocation_failed: float = 3.0  # per allocation failed or lost within `failed_window_s`
    allocation_pending: float = 1.0  # per allocation pending for `pending_s` or longer
    allocation_flapping: float = 5.0  # per allocation restarting `flapping_restarts` times
    quota_pressure: float = 5.0  # per namespace at `quota_fraction` of a quota or more
    deployment_failed: float = 5.0  # per job whose latest rollout failed
    alert_critical: float = 10.0  # per firing critical alert (health_below rules excepted)
    alert_warning: float = 3.0  # per firing warning alert (health_below rules excepted)
    max_per_reason: float = 40.0
    lag_entries: int = 1000
    pending_s: float = 30.0
    flapping_restarts: int = 3
    flapping_window_s: float = 300.0
    failed_window_s: float = 600.0
    quota_fraction: float = 0.9

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HealthWeights:
        """From the state (trusted): fields this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


INTEGER_FIELDS = frozenset({"lag_entries", "flapping_restarts"})
MAX_WEIGHT = 100.0
MAX_SECONDS = 86400.0 * 7


@dataclass(frozen=True)
class ClusterConfig:
    health: HealthWeights = field(default_factory=HealthWeights)

    def to_dict(self) -> dict[str, Any]:
        return {"health": self.health.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClusterConfig:
        h = d.get("health")
        return cls(HealthWeights.from_dict(h) if isinstance(h, dict) else HealthWeights())


def _parse_weight(name: str, value: Any, where: str) -> float | int:
    if name in INTEGER_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**9:
            raise invalid(where, "must be a whole number from 1")
        return value
    if name == "quota_fraction":
        return number(value, where, minimum=0.0, maximum=1.0, allow_zero=False)
    if name.endswith("_s"):
        return number(value, where, minimum=0.0, maximum=MAX_SECONDS)
    return number(value, where, minimum=0.0, maximum=MAX_WEIGHT)


def parse_cluster_config(body: Any) -> ClusterConfig:
    """A config from untrusted input; raises `Rejection` naming the field. Fields left out
    take their defaults (a PUT replaces the whole config)."""
    d = obj(body, "config")
    no_unknown(d, {"health"}, "")
    h = obj(d.get("health"), "health")
    names = {f.name for f in dataclasses.fields(HealthWeights)}
    no_unknown(h, names, "health.")
    values = {k: _parse_weight(k, v, f"health.{k}") for k, v in h.items()}
    return ClusterConfig(HealthWeights(**values))  # type: ignore[arg-type]
