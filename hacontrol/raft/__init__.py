"""Replicated log: pysyncobj behind a fence, a Replica and an asyncio bridge."""

from hacontrol.raft.bridge import ApplyFailed, LogBridge, NotApplied, OutcomeUnknown, RaftError
from hacontrol.raft.config import RaftTuning, ReplicaConfig
from hacontrol.raft.replica import Applied, ApplyError, Machine, RaftStatus, Replica
from hacontrol.raft.safety import install_fence, require_secret, restore_inet_ntop

restore_inet_ntop()

__all__ = [
    "Applied",
    "ApplyError",
    "ApplyFailed",
    "LogBridge",
    "Machine",
    "NotApplied",
    "OutcomeUnknown",
    "RaftError",
    "RaftStatus",
    "RaftTuning",
    "Replica",
    "ReplicaConfig",
    "install_fence",
    "require_secret",
]
