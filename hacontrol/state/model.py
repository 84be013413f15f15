"""Re-export of the model under its old names; new code imports `hacontrol.model`."""

from hacontrol.model.records import Allocation, Deployment, Job, JobVersion, Node
from hacontrol.model.resources import Quota, Resources, Usage
from hacontrol.model.spec import JobSpec, RestartSpec, StopSpec
from hacontrol.model.states import (
    TERMINAL_STATES,
    AllocState,
    DesiredState,
    JobStatus,
    NodeStatus,
    RestartPolicy,
)

PENDING = AllocState.PENDING
STARTING = AllocState.STARTING
RUNNING = AllocState.RUNNING
EXITED = AllocState.EXITED
FAILED = AllocState.FAILED
LOST = AllocState.LOST
STOPPED = AllocState.STOPPED
PAUSED = AllocState.PAUSED
COMPLETE = AllocState.COMPLETE
ALLOC_STATES = tuple(AllocState)
DESIRED_RUN = DesiredState.RUN
DESIRED_STOP = DesiredState.STOP
NODE_READY = NodeStatus.READY
NODE_DOWN = NodeStatus.DOWN
JOB_RUNNING = JobStatus.RUNNING
JOB_STOPPING = JobStatus.STOPPING
RESTART_POLICIES = tuple(RestartPolicy)

__all__ = [
    "ALLOC_STATES", "COMPLETE", "DESIRED_RUN", "DESIRED_STOP", "EXITED", "FAILED",
    "JOB_RUNNING", "JOB_STOPPING", "LOST", "NODE_DOWN", "NODE_READY", "PAUSED", "PENDING",
    "RESTART_POLICIES", "RUNNING", "STARTING", "STOPPED", "TERMINAL_STATES", "Allocation",
    "Deployment", "Job", "JobSpec", "JobVersion", "Node", "Quota", "Resources", "RestartSpec",
    "StopSpec", "Usage",
]
