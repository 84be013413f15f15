"""Rolling updates: what the next step of a deployment is, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass, field

from hacontrol.model.states import AllocState, Health


@dataclass(frozen=True)
class Allocation:
    id: str
    state: str  # allocation state
    health: str | None  # None when the job has no health check
    running_since: float | None


@dataclass(frozen=True)
class Step:
    start: int = 0  # new-version instances to create
    stop: list[str] = field(default_factory=list)  # old-version instances to stop
    status: str | None = None  # successful | failed, when the deployment ends
    revert_to: int | None = None  # auto_revert: version to go back to
    message: str = ""

    @property
    def empty(self) -> bool:
        return not self.start and not self.stop and self.status is None


def healthy_for(i: Allocation, min_healthy_s: float, now: float) -> bool:
    if i.state != AllocState.RUNNING or i.running_since is None:
        return False
    if i.health is not None and i.health != Health.HEALTHY:
        return False
    return now - i.running_since >= min_healthy_s


def next_step(count: int, max_parallel: int, min_healthy_s: float, deadline: float,
              auto_revert: bool, from_version: int, new: list[Allocation], old: list[Allocation],
              now: float) -> Step:
    """Replace `old` by `new` instances `max_parallel` at a time, each healthy for
    `min_healthy_s` before an old one goes; fail (and maybe revert) past the deadline."""
    healthy = [i for i in new if healthy_for(i, min_healthy_s, now)]
    if len(healthy) >= count and not old:
        return Step(status="successful", message=f"{len(healthy)} instances healthy")
    if now > deadline:
        return Step(status="failed", revert_to=from_version if auto_revert else None,
                    message=f"deadline passed with {len(healthy)}/{count} healthy")
    failed = [i for i in new if i.state in (AllocState.FAILED, AllocState.LOST)]
    if failed and auto_revert:
        return Step(status="failed", revert_to=from_version,
                    message=f"{len(failed)} new instance(s) failed")
    # Old instances that a healthy new one has taken over from.
    surplus_old = len(old) - max(0, count - len(healthy))
    stop = [i.id for i in sorted(old, key=lambda i: i.id)[:max(0, surplus_old)]]
    in_flight = len([i for i in new if i not in healthy])
    room = max(0, max_parallel - in_flight)
    start = max(0, min(room, count - len(new)))
    return Step(start=start, stop=stop)
