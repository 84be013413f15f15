"""What the agent sends about its allocations: the JSON of reports and metrics.

Shared by the sync loop (:mod:`hacontrol.agent.main`) and the agent's HTTP
API (:mod:`hacontrol.agent.http`); the keys are a wire format the controllers
read and must not change.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hacontrol.agent.metrics import AllocationMetrics
from hacontrol.agent.spec import AllocationEvent

# Reports are capped so one chatty failure cannot bloat the log of the cluster.
MAX_MESSAGE = 2000


def event_report(ev: AllocationEvent) -> dict[str, Any]:
    return {
        "id": ev.alloc_id,
        "state": ev.state,
        "pid": ev.pid,
        "restarts": ev.restarts,
        "exit_code": ev.exit_code,
        "signal": ev.signal,
        "message": ev.message[:MAX_MESSAGE],
        "ts": ev.ts,
        "health": ev.health,
        "reason": ev.reason,
    }


def metrics_report(m: AllocationMetrics) -> dict[str, Any]:
    return asdict(m)
