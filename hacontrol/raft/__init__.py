"""Replicated log: pysyncobj behind a fence, a Replica and an asyncio bridge."""

from hacontrol.raft.bridge import ApplyFailed, LogBridge, NotApplied, OutcomeUnknown, RaftError
from hacontrol.raft.config import Durability, RaftTuning, ReplicaConfig
from hacontrol.raft.journal import first_mismatch, read_entries
from hacontrol.raft.replica import Applied, ApplyError, Machine, RaftStatus, Replica
from hacontrol.raft.safety import install_fence, require_secret, restore_inet_ntop
from hacontrol.raft.storage import StorageError

restore_inet_ntop()

__all__ = [
    "Applied",
    "ApplyError",
    "ApplyFailed",
    "Durability",
    "LogBridge",
    "Machine",
    "NotApplied",
    "OutcomeUnknown",
    "RaftError",
    "RaftStatus",
    "RaftTuning",
    "Replica",
    "ReplicaConfig",
    "StorageError",
    "first_mismatch",
    "install_fence",
    "read_entries",
    "require_secret",
]
