"""Every closed set of names in the model, as `StrEnum`s.

A `StrEnum` member equals its string value and encodes as it (JSON, msgpack), so wire
formats, snapshots and the state digest are the same as with bare strings.
"""

from __future__ import annotations

import enum


class AllocState(enum.StrEnum):
    """Where an allocation is, as the controllers know it."""

    PENDING = "pending"  # not yet placed on a node
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"  # frozen on request; still holds its resources
    EXITED = "exited"  # ended; may be restarted by the agent or be complete
    FAILED = "failed"  # the restart policy gave up, or it could not start
    LOST = "lost"  # its node went down
    STOPPED = "stopped"  # stopped on request
    COMPLETE = "complete"  # a batch allocation that exited successfully

    @property
    def terminal(self) -> bool:
        """After these the allocation holds no resources and never runs again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({AllocState.FAILED, AllocState.LOST, AllocState.STOPPED,
                             AllocState.COMPLETE})
# What an agent may report; the controllers decide pending, lost and complete themselves.
REPORTED_STATES = frozenset({AllocState.STARTING, AllocState.RUNNING, AllocState.PAUSED,
                             AllocState.EXITED, AllocState.FAILED, AllocState.STOPPED})


class DesiredState(enum.StrEnum):
    RUN = "run"
    STOP = "stop"


class NodeStatus(enum.StrEnum):
    READY = "ready"
    DOWN = "down"


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    STOPPING = "stopping"  # stopped by request; removed once none of its processes run
    # Never stored: a view of a running batch job whose allocations all completed.
    COMPLETE = "complete"
    # Never stored: a view of a running job whose current allocations all ended, some
    # failed (their restart policy gave up).
    FAILED = "failed"


class JobType(enum.StrEnum):
    SERVICE = "service"
    BATCH = "batch"


class Scoring(enum.StrEnum):
    BINPACK = "binpack"
    SPREAD = "spread"


class DeploymentStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCESSFUL = "successful"
    FAILED = "failed"


class Health(enum.StrEnum):
    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class ExitReason(enum.StrEnum):
    """Why an allocation's process last ended."""

    EXIT = "exit"
    SIGNAL = "signal"
    OOM = "oom"
    STOPPED = "stopped"
    HEALTH = "health"
    FAILED_START = "failed-start"


class RestartPolicy(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class HealthCheckType(enum.StrEnum):
    TCP = "tcp"
    HTTP = "http"
    EXEC = "exec"


class MetricSource(enum.StrEnum):
    """Where a scaling metric's values come from."""

    EXTERNAL = "external"  # pushed through the API (PUT /v1/jobs/{ns}/{name}/metrics/{m})
    PROMETHEUS = "prometheus"  # scraped by the agents from each running allocation


class ConstraintOperator(enum.StrEnum):
    EQ = "="
    NE = "!="
    IN = "in"
    REGEXP = "regexp"
    DISTINCT_NODES = "distinct_nodes"
