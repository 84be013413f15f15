"""Failures a caller of the controller can see, one type each.

The controller and the leader loop raise these; the API turns each into an HTTP answer in
one place (`hacontrol/api/errors.py`). Commands the state machine refuses, and requests
whose content is wrong, are `Rejection`s (re-exported here); the rest tell what the log did
with a command, after `hacontrol/raft/bridge.py`'s taxonomy (NotApplied, OutcomeUnknown,
ApplyFailed), plus what the replica itself can refuse.
"""

from __future__ import annotations

from hacontrol.model.errors import Rejection

__all__ = ["AgentUnreachable", "CommandFailed", "ControlError", "MembershipConflict",
           "NoQuorum", "NotApplied", "NotLeader", "OutcomeUnknown", "Rejection", "Unsupported"]


class ControlError(Exception):
    """Base of the failures below; `reason` is the cause as the log or the peer gave it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotApplied(ControlError):
    """The command is certainly not in the log and never will be: safe to retry as is.

    `leader` is the replica this one believed to lead when the write failed (or None)."""

    def __init__(self, reason: str, leader: str | None) -> None:
        super().__init__(reason)
        self.leader = leader


class OutcomeUnknown(ControlError):
    """The command may or may not be applied, now or later: retry with the same
    idempotency key, which makes the retry apply at most once."""

    def __init__(self, reason: str, idempotency_key: str) -> None:
        super().__init__(reason)
        self.idempotency_key = idempotency_key


class CommandFailed(ControlError):
    """The command was committed, but applying it raised or gave no usable result: a bug."""


class NoQuorum(ControlError):
    """A linearizable read could not get its no-op through the log; a stale read can."""


class NotLeader(ControlError):
    """This replica does not lead: a leader-only request goes to `leader_api`."""

    def __init__(self, leader: str | None, leader_api: str | None) -> None:
        super().__init__("this replica is not the leader")
        self.leader = leader
        self.leader_api = leader_api


class AgentUnreachable(ControlError):
    """The node agent a request is carried to did not answer.

    `address` is set when the request streams from the agent (logs)."""

    def __init__(self, reason: str, address: str | None = None) -> None:
        super().__init__(reason)
        self.address = address


class Unsupported(ControlError):
    """A command type some voter does not know yet (mid-upgrade): never proposed, so
    certainly not applied; it works once every replica runs a version that knows it."""


class MembershipConflict(ControlError):
    """A membership change refused as things stand (a 409): `code` names why
    (`change_in_progress`, `quorum_at_risk`, `id_taken`, ...), `detail` adds facts."""

    def __init__(self, code: str, reason: str, detail: dict[str, object] | None = None
                 ) -> None:
        super().__init__(reason)
        self.code = code
        self.detail = detail or {}
