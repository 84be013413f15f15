"""Applying a large entry only once the machine has prepared it, without stopping Raft.

A restore entry (`state/prepare.py`) applies in milliseconds once its state is decoded,
which takes seconds on a thread of its own. Raft does not ask a replica to apply an entry
the moment it commits, only in log order: so the Raft thread applies the entries before
it and holds back from it on (`hold_back`), while it goes on answering the leader,
acknowledging appends and serving ReadIndex rounds; the machine wakes it once the entry is
ready. Before, the decode ran inside the apply, on this thread: for its whole length the
replica answered nobody, and with every follower decoding at once no write committed.

Only entries of `PREPARE_BYTES` or more are asked about: anything smaller is quick to
decode and is applied as it comes.

The replica that proposes a restore also hands its body to its peers (a `PREPARE` message
on the Raft links, `share`) before it proposes; each answers `PREPARED` once it has
decoded it, and the proposer waits for those answers (a few seconds at most) before it
proposes, so that no replica holds the entry back when it commits (one that did made its
reads, and the writes sent through it, wait 0.3-0.5 s). A peer that does not know the
message types ignores them (pysyncobj dispatches on known types only) and decodes when the
entry arrives, as it did before; the proposer then waits its few seconds for nothing.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

PREPARE = "hc_prepare"
PREPARED = "hc_prepared"  # the answer: this peer has decoded the body of that key
PREPARE_BYTES = 64 * 1024
# While the machine decodes a restore, so does every replica (the proposer handed them the
# body), and on a busy machine their ticks slow down: a follower waits this long for its
# leader, a leader this much longer for its followers, before acting (as after a long
# apply, long_apply.py). Without it: 6-14 elections per restore of 10,000 jobs with three
# replicas on 2 loaded cores.
PATIENCE_S = 1.0
TYPES = (PREPARE, PREPARED)
_LEADER = 2
_REGULAR = b"\x00"  # pysyncobj's _COMMAND_TYPE.REGULAR: a call of a replicated method

Ready = Callable[[bytes, int], bool]


def unwrap(entry: bytes) -> bytes | None:
    """The machine's command in a pysyncobj log entry (a call of the node's one replicated
    method, `(method id, (command,))` pickled), or None."""
    if entry[:1] != _REGULAR:
        return None
    import pysyncobj.pickle as pso_pickle  # the restricted unpickler (raft/safety.py)

    try:
        call = pso_pickle.loads(entry[1:])
    except Exception:
        return None
    if (isinstance(call, tuple) and len(call) >= 2 and isinstance(call[1], tuple | list)
            and call[1] and isinstance(call[1][0], bytes)):
        return bytes(call[1][0])
    return None


def hold_back(entries: Iterable[Any], ready: Ready,
              min_bytes: int = PREPARE_BYTES) -> int | None:
    """The index of the first of `entries` (pysyncobj's `(data, index, term)`) that the
    machine is not ready to apply, or None when all are."""
    for entry in entries:
        data = entry[0]
        if len(data) < min_bytes:
            continue
        command = unwrap(data)
        if command is not None and not ready(command, int(entry[1])):
            return int(entry[1])
    return None


def held_back(node: Any, owner: Any) -> int | None:
    """Tick thread: the index of the first committed entry the owner's machine is still
    preparing (`owner.ready_to_apply`), or None."""
    ready = getattr(owner, "ready_to_apply", None)
    applied = int(node._SyncObj__raftLastApplied)
    count = int(node._SyncObj__raftCommitIndex) - applied
    if ready is None or count <= 0:
        return None
    return hold_back(node._SyncObj__getEntries(applied + 1, count), ready)


def be_patient(node: Any, owner: Any, now: float) -> None:
    """Tick thread, every tick: `PATIENCE_S` while the owner's machine is preparing."""
    preparing = getattr(owner, "preparing", None)
    if preparing is None or not preparing():
        return
    if node._SyncObj__raftState == _LEADER:
        node._hc_fallback_hold = (now + PATIENCE_S, PATIENCE_S)
        return
    deadline = node._SyncObj__raftElectionDeadline
    if deadline != 0 and not node._SyncObj__transferInProgress:  # 0: a transfer's "now"
        node._SyncObj__raftElectionDeadline = max(deadline, now + PATIENCE_S)


def share(node: Any, body: bytes) -> None:
    """Tick thread: hand a restore's body to every peer."""
    message = {"type": PREPARE, "body": body}
    for peer in list(node._SyncObj__otherNodes):
        node._SyncObj__transport.send(peer, message)


def receive(node: Any, sender: Any, message: dict[str, Any], owner: Any) -> None:
    """Tick thread: a peer's `PREPARE` or `PREPARED` message; only members are heard (the
    link is authenticated by the cluster secret, like every entry they could propose)."""
    if sender not in node._SyncObj__otherNodes:
        return
    if message.get("type") == PREPARED:
        key, told = message.get("key"), getattr(owner, "on_prepared", None)
        if isinstance(key, str) and told is not None:
            told(str(sender.address), key)
        return
    body, prepare = message.get("body"), getattr(owner, "on_prepare", None)
    if isinstance(body, bytes) and prepare is not None:
        prepare(body, sender)


class Preparing:
    """What the replica (`raft/replica.py`) does for the gate: asks its machine, which
    may implement `ready_to_apply(command, index, wake)`, `preparing()`,
    `prepare_restore(body, done)` and `prepared_by(peer, key)`."""

    machine: Any
    _node: Any
    _destroyed: bool
    _tick_calls: deque[Callable[[], None]]

    def _wake(self) -> None: ...

    def ready_to_apply(self, command: bytes, index: int) -> bool:
        """Tick thread: whether the machine applies this large entry quickly now; while
        not, the entry waits and the tick goes on, until the machine wakes this thread."""
        ready = getattr(self.machine, "ready_to_apply", None)
        return ready is None or bool(ready(command, index, self._wake))

    def preparing(self) -> bool:
        """Whether the machine is decoding a restore now."""
        busy = getattr(self.machine, "preparing", None)
        return busy is not None and bool(busy())

    def on_prepare(self, body: bytes, sender: Any) -> None:
        """Tick thread: `sender` is about to propose a restore of `body`; it is told once
        the state is decoded here."""
        prepare = getattr(self.machine, "prepare_restore", None)
        if prepare is None:
            return

        def done(key: str) -> None:  # any thread
            answer = {"type": PREPARED, "key": key}
            self._tick_calls.append(lambda: self._node._SyncObj__transport.send(sender, answer))
            self._wake()
        prepare(body, done)

    def on_prepared(self, peer: str, key: str) -> None:
        """Tick thread: `peer` has decoded the restore's state `key`."""
        told = getattr(self.machine, "prepared_by", None)
        if told is not None:
            told(peer, key)

    def share_prepare(self, body: bytes) -> int:
        """Hand a restore's body to the peers before proposing it; to how many. Any
        thread."""
        if self._node is None or self._destroyed:
            return 0
        self._tick_calls.append(lambda: share(self._node, body))
        self._wake()
        return len(self._node._SyncObj__otherNodes)
