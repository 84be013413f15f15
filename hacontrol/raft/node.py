"""Our pysyncobj node: its journal, when it fsyncs, and its append handling.

Where the fsyncs happen (the journal buffers `add`s, `sync` writes and fdatasyncs them):

* follower: a success reply to AppendEntries (`next_node_idx` with success) is held back
  until the entries it acknowledges are synced. Replies are released at the start of the
  next tick, after one `sync` that covers every entry received during that poll: group
  commit across messages. Replies held behind a truncation of the log are dropped (they
  may acknowledge entries that are gone); the leader resends.
* leader (Raft thesis 10.2.1, as etcd does): the tick thread never waits for its own
  disk. At the end of each tick, right after the new entries went out to the followers,
  and at the start of the next, `hc_flush` only asks the journal's sync thread to write
  and fdatasync what is buffered. The commit rule counts the leader with its *durable*
  index instead of its last index (`_hc_commit_index`): an entry commits once a majority
  has it on stable storage, with or without the leader. docs/durability.md argues why
  this is safe.
* term and vote: `DurableJournal.setCurrentTerm` is durable before it returns, and
  pysyncobj sends votes and new-term messages only after it returns.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hacontrol.raft import (
    append_fix,
    election_grace,
    fast_failover,
    kept_link,
    long_apply,
    membership,
    prepare_gate,
    read_messages,
)
from hacontrol.raft.commit_push import CommitPush
from hacontrol.raft.follower_reads import FollowerReads
from hacontrol.raft.journal import SyncedJournal
from hacontrol.raft.long_apply import LongApply
from hacontrol.raft.readindex import ReadCallback, ReadOutcome, ReadRounds
from hacontrol.raft.storage import StorageError, durable_replace

logger = logging.getLogger(__name__)


class NodeOwner(Protocol):
    def apply_entry(self, command: bytes, index: int) -> Any: ...

    def on_storage_error(self, message: str) -> None: ...


_LEADER = 2  # pysyncobj's _RAFT_STATE.LEADER
STATE_WAIT_S = 0.01  # how long applies wait for a read before they are put off (reads: <1 ms)
_pending = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False


def _install_hooks() -> None:
    """Let a node bring its own journal (pysyncobj builds one from a file name), and make
    pysyncobj's dump renames durable (it renames without any fsync)."""
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        import pysyncobj.serializer
        import pysyncobj.syncobj as so

        original = so.createJournal

        def create_journal(journal_file: Any = None) -> Any:
            journal = getattr(_pending, "journal", None)
            return journal if journal is not None else original(journal_file)

        def atomic_replace(old_path: str, new_path: str) -> bool:
            # Both the dump we write and one received from the leader land here.
            durable_replace(Path(old_path), Path(new_path))
            return True

        so.createJournal = create_journal
        pysyncobj.serializer.atomicReplace = atomic_replace
        _hook_installed = True


def _make_node_class() -> type:
    from pysyncobj import SyncObj, replicated

    # Not time.monotonic: pysyncobj's clock differs from it (by 58 ms here).
    from pysyncobj.monotonic import monotonic as raft_clock

    _install_hooks()
    fast_failover.install()

    class Node(SyncObj):  # type: ignore[misc]
        # pysyncobj's, written here by our commit rule and the election grace
        _SyncObj__raftCommitIndex: int
        _SyncObj__raftElectionDeadline: float
        _SyncObj__transferInProgress: bool

        def __init__(self, owner: NodeOwner, self_addr: str, peers: list[str], conf: Any,
                     journal: SyncedJournal, transport: Any = None,
                     large: LongApply | None = None) -> None:
            # A weak reference: the Replica owns the node, not the other way round.
            self._hc_owner = weakref.ref(owner)
            self._hc_journal = journal
            self._hc_replies: list[tuple[Any, bool, int, int]] = []
            self._hc_stopped = False
            # While set, pysyncobj's own commit loop sees the log end here (see _onTick).
            self._hc_log_cap: int | None = None
            self._hc_polled_at = 0.0  # when this thread last finished reading its sockets
            self._hc_heard_at = 0.0  # when it last received an append (a heartbeat)
            self._hc_grace_deadline = -1.0  # the deadline a missed one was moved to
            # The leader whose link a snapshot's configuration would have cut (see
            # _SyncObj__updateClusterConfiguration): linked, not a member here.
            self._hc_kept: Any = None
            # A round answered by no majority within one minimum election timeout is
            # lost: by then a partitioned leader's followers may have elected another.
            self._hc_reads = ReadRounds(round_timeout=conf.raftMinTimeout)
            self._hc_asks = FollowerReads(timeout=conf.raftMinTimeout)
            # Long applies (see long_apply.py): the policy, the leader's fallback timeout as
            # configured, and how long it stays stretched after one.
            self._hc_large = large if large is not None else LongApply()
            self._hc_fallback = float(conf.leaderFallbackTimeout)
            self._hc_fallback_hold = (0.0, 0.0)  # (until, extra seconds)
            self._hc_fast = fast_failover.FastFailover.from_heartbeat(conf.appendEntriesPeriod)
            self._hc_push = CommitPush()
            _pending.journal = journal
            try:
                super().__init__(self_addr, peers, conf, transport=transport)
            finally:
                _pending.journal = None

        # ---- durability --------------------------------------------------------------

        def _SyncObj__sendNextNodeIdx(self, node: Any, reset: bool = False,  # noqa: N802
                                      nextNodeIdx: Any = None,  # noqa: N803
                                      success: bool = False) -> None:
            if nextNodeIdx is None:
                nextNodeIdx = self._SyncObj__getCurrentLogIndex() + 1  # noqa: N806
            if success or self._hc_replies:
                # Behind a held reply, even a refusal waits: replies keep their order.
                self._hc_replies.append((node, reset, nextNodeIdx,
                                         self._hc_journal.truncations if success else -1))
                return
            super()._SyncObj__sendNextNodeIdx(node, reset=reset, nextNodeIdx=nextNodeIdx,
                                              success=False)

        def hc_flush(self) -> bool:
            """Sync the journal, then release held replies; False once storage failed."""
            if self._hc_stopped:
                return False
            journal = self._hc_journal
            try:
                if journal.background and self._SyncObj__raftState == _LEADER:
                    if journal.error is not None:
                        raise StorageError(journal.error)
                    journal.request_sync()
                    if not self._hc_replies:
                        return True
                journal.sync()
            except StorageError as exc:
                self._hc_stop(str(exc))
                return False
            replies, self._hc_replies = self._hc_replies, []
            send = super()._SyncObj__sendNextNodeIdx
            cuts = self._hc_journal.truncations
            for node, reset, next_idx, cuts_then in replies:
                if cuts_then >= 0 and cuts_then != cuts:
                    continue  # the log was cut since: this success may name lost entries
                send(node, reset=reset, nextNodeIdx=next_idx, success=cuts_then >= 0)
            return True

        def _hc_stop(self, message: str) -> None:
            self._hc_stopped = True
            self._hc_replies = []
            self._hc_reads.fail_all(ReadOutcome.NOT_LEADER)
            self._hc_asks.fail_all(ReadOutcome.NOT_LEADER)
            owner = self._hc_owner()
            if owner is not None:
                owner.on_storage_error(message)
            self.destroy()

        def _SyncObj__onBecomeLeader(self) -> None:  # noqa: N802
            super()._SyncObj__onBecomeLeader()
            self._hc_push = CommitPush()
            # Its no-op is on disk before anything counts it: a single-node cluster
            # computes its commit index right after an election, in the same tick.
            self._hc_journal.sync()

        def _onTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802, N803
            if not self.hc_flush():
                return
            prepare_gate.be_patient(self, self._hc_owner(), raft_clock())
            if self._SyncObj__raftState == _LEADER:
                self.hc_read_step()  # probes go before pysyncobj's appends: 0.1 ms sooner
                # Our commit rule first; pysyncobj's loop, which counts the leader for
                # every entry it has, then finds nothing beyond it (the cap lifts when
                # pysyncobj applies entries, right after its loop).
                self._hc_advance_commit()
                self._hc_log_cap = int(self._SyncObj__raftCommitIndex)
                until, extra = self._hc_fallback_hold
                self._SyncObj__conf.leaderFallbackTimeout = long_apply.fallback_timeout(
                    self._hc_fallback, raft_clock(), until, extra)
                timeToWait = self._hc_push.wait(  # noqa: N806
                    timeToWait, self._SyncObj__raftCommitIndex, raft_clock())
            else:
                election_grace.hear_before_electing(self, raft_clock())
                election_grace.no_campaign_outside(self, self._hc_owner(), raft_clock())
                timeToWait = fast_failover.tick_wait(self, timeToWait, raft_clock())  # noqa: N806
            if self._hc_kept is not None:
                kept_link.release_kept(self, _LEADER)
            term = self._SyncObj__raftCurrentTerm
            try:
                super()._onTick(timeToWait)
            except StorageError as exc:
                self._hc_stop(str(exc))
            finally:
                self._hc_log_cap = None
            self._hc_polled_at = raft_clock()  # pysyncobj's tick ends with its poll
            fast_failover.after_tick(self, term, self._hc_fast, self._hc_polled_at)

        def _SyncObj__onNodeDisconnected(self, node: Any) -> None:  # noqa: N802
            super()._SyncObj__onNodeDisconnected(node)
            fast_failover.on_link_closed(self, node, self._hc_fast, raft_clock())

        # ---- membership (see membership.py) --------------------------------------------

        def _SyncObj__doChangeCluster(self, request: Any,  # noqa: N802
                                      reverse: bool = False) -> bool:
            with kept_link.one_link(self):
                changed = bool(super()._SyncObj__doChangeCluster(request, reverse))
            mine = (isinstance(request, list | tuple) and len(request) > 1
                    and request[1] == getattr(self._SyncObj__selfNode, "address", None))
            owner = self._hc_owner()
            # pysyncobj never changes its own node (it answers False): the book still
            # learns that this replica was added or removed.
            notify = getattr(owner, "on_membership", None)
            if notify is not None and (changed or mine):
                notify(request, reverse)
            return changed

        def _SyncObj__updateClusterConfiguration(self, newNodes: Any) -> None:  # noqa: N802, N803
            """A snapshot was installed: its configuration (the members when it was taken)
            replaces ours. A leader it does not list keeps its link (not its membership)
            until the log adds it back: pysyncobj would drop it (see kept_link.py)."""
            leader = self._SyncObj__raftLeader
            others = self._SyncObj__otherNodes
            listed = {getattr(n, "address", n) for n in newNodes}
            keep = (leader is not None and leader in others
                    and getattr(leader, "address", None) not in listed)
            if keep:
                others.discard(leader)  # not among the nodes pysyncobj drops
            with kept_link.one_link(self):
                super()._SyncObj__updateClusterConfiguration(newNodes)
            if keep:
                self._hc_kept = leader
                logger.info("raft: the snapshot from leader %s does not list it; keeping "
                            "its link until the log adds it", leader.address)

        def hc_silence(self) -> str:
            return election_grace.silence(self, raft_clock())

        def hc_peer_view(self) -> dict[str, tuple[int, float | None, bool]]:
            return membership.peer_view(self, raft_clock())

        def hc_push(self) -> None:
            """Tick thread, leader, end of a tick: send AppendEntries now if new entries
            or a commit index are due to go out (commit_push.py)."""
            if self._hc_push.push_now(self._SyncObj__raftLog[-1][1],
                                      self._SyncObj__raftCommitIndex, raft_clock()):
                self._SyncObj__sendAppendEntries()

        def _SyncObj__getCurrentLogIndex(self) -> int:  # noqa: N802
            last: int = self._SyncObj__raftLog[-1][1]
            cap = self._hc_log_cap
            return last if cap is None else min(last, cap)

        def _SyncObj__applyLogEntries(self) -> bool:  # noqa: N802
            self._hc_log_cap = None
            commit = self._SyncObj__raftCommitIndex
            # An entry the machine is still preparing, and all after it, wait for a later
            # tick (prepare_gate.py); pysyncobj applies up to its commit index.
            held = prepare_gate.held_back(self, self._hc_owner())
            if held is not None:
                self._SyncObj__raftCommitIndex = held - 1
            try:
                return self._hc_apply_entries()
            finally:
                if held is not None:
                    self._SyncObj__raftCommitIndex = commit

        def _hc_apply_entries(self) -> bool:
            if self._SyncObj__raftCommitIndex <= self._SyncObj__raftLastApplied:
                return False
            # A read of the whole state can hold the lock a second on a loaded machine: waiting
            # here stopped Raft (a 2 s read on a leader cost an election within 0.4 s).
            owner = self._hc_owner()  # below, None: owners without a lock of their own (tests)
            hold, release = (getattr(owner, n, None) for n in ("hold_state", "release_state"))
            if hold is not None and not hold(STATE_WAIT_S):
                return False  # the applies wait for a later tick, Raft goes on
            try:
                return self._hc_apply_held()
            finally:
                if hold is not None and release is not None:
                    release()

        def _hc_apply_held(self) -> bool:
            leader = self._SyncObj__raftState == _LEADER
            if leader and long_apply.heartbeat_first(self._hc_sizes_to_apply(), self._hc_large):
                # The followers learn the commit index now and apply alongside, instead of
                # hearing nothing until this replica is done (long_apply.py).
                self._SyncObj__sendAppendEntries()
            start = raft_clock()
            applied = self._SyncObj__raftLastApplied
            try:
                return bool(super()._SyncObj__applyLogEntries())
            finally:
                self._hc_after_apply(leader, raft_clock() - start)
                # getattr: owners that wake nobody (tests) need not have it.
                after = getattr(self._hc_owner(), "after_apply", None)
                if after is not None and self._SyncObj__raftLastApplied != applied:
                    after()

        def _hc_sizes_to_apply(self) -> list[int]:
            if self._hc_large.heartbeat_before_bytes <= 0:
                return []
            applied = int(self._SyncObj__raftLastApplied)
            count = int(self._SyncObj__raftCommitIndex) - applied
            if count <= 0:
                return []
            return [len(e[0]) for e in self._SyncObj__getEntries(applied + 1, count)]

        def _hc_after_apply(self, leader: bool, took: float) -> None:
            """After a long apply the others are silent for a while too (they apply the
            same entry): the election or fallback timeout counts from after that."""
            grace_s = long_apply.grace(took, self._hc_large)
            if grace_s <= 0:
                return
            now = raft_clock()
            if leader:
                self._hc_fallback_hold = (now + grace_s + self._hc_fallback, grace_s)
                return
            if self._SyncObj__transferInProgress:
                return  # a transfer asked this replica to campaign: not delayed
            self._SyncObj__raftElectionDeadline = long_apply.election_deadline(
                self._SyncObj__raftElectionDeadline, now, grace_s,
                self._SyncObj__generateRaftTimeout())

        def _hc_commit_index(self) -> int:
            """The highest index a majority holds on stable storage, the leader counted
            with its durable index (followers acknowledge only synced entries)."""
            held = [self._hc_journal.durable_index]
            held += [self._SyncObj__raftMatchIndex.get(node, 0)
                     for node in self._SyncObj__otherNodes]
            held.sort(reverse=True)
            return held[len(held) // 2]

        def _hc_advance_commit(self) -> None:
            index = self._hc_commit_index()
            if index <= int(self._SyncObj__raftCommitIndex):
                return
            entries = self._SyncObj__getEntries(index, 1)
            # Raft, figure 8: only an entry of the current term commits by counting
            # (earlier ones commit with it); the leader appends only current-term entries,
            # so an older term here means nothing below it is ours either.
            if not entries or entries[0][2] != self._SyncObj__raftCurrentTerm:
                return
            self._SyncObj__raftCommitIndex = index
            self._SyncObj__raftLog.setRaftCommitIndex(index)

        # ---- linearizable reads (readindex, follower_reads, read_messages) --------------

        def hc_read_index(self, callback: ReadCallback) -> bool:
            """Any thread: `callback(read_index, outcome)` fires on the tick thread.
            True when the tick thread needs a wake-up for it (see `ReadRounds.add`)."""
            if self._hc_stopped:
                callback(0, ReadOutcome.NOT_LEADER)
                return False
            if self._SyncObj__raftState == _LEADER:
                return self._hc_reads.add(callback)
            return self._hc_asks.add(callback)  # a follower asks its leader

        def hc_read_step(self) -> None:
            """Tick thread, every tick: expire, release and start reads."""
            read_messages.step(self, time.monotonic())

        @property
        def hc_read_rounds(self) -> int:
            return self._hc_reads.rounds

        # ---- overlapping appends (see append_fix) -----------------------------------------

        def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> Any:  # noqa: N802
            # Overrides pysyncobj's private handler (its callback is bound by attribute
            # lookup, so this method is the one registered).
            if self._hc_stopped:
                return None
            kind = message.get("type") if isinstance(message, dict) else None
            if kind == "append_entries":
                self._hc_heard_at = raft_clock()
            elif kind == "apply_command":  # a follower waits to apply it (commit_push.py)
                self._hc_push.proposed_by_follower()
            if kind in prepare_gate.TYPES:
                return prepare_gate.receive(self, node, message, self._hc_owner())
            if kind in read_messages.TYPES:
                return read_messages.on_message(self, node, message, time.monotonic())
            handle = super()._SyncObj__onMessageReceived
            if (kind != "append_entries"
                    or "prevLogIdx" not in message or message.get("transmission") is not None
                    or message.get("term", -1) < self.raftCurrentTerm):
                return handle(node, message)
            prev = message["prevLogIdx"]
            last = self._SyncObj__getCurrentLogIndex()
            if prev >= last:
                return handle(node, message)
            ours = self._SyncObj__getEntries(prev)
            message, reply_next = append_fix.rewrite(message, ours, last,
                                                     self._SyncObj__getCurrentLogTerm())
            if reply_next is None:
                return handle(node, message)
            send: Callable[..., Any] = self._SyncObj__sendNextNodeIdx

            def pinned(node: Any, reset: bool = False, nextNodeIdx: Any = None,  # noqa: N803
                       success: bool = False) -> Any:
                if success:
                    nextNodeIdx = reply_next
                return send(node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

            self._SyncObj__sendNextNodeIdx = pinned  # type: ignore[method-assign]
            try:
                return handle(node, message)
            finally:
                del self._SyncObj__sendNextNodeIdx

        # The only replicated method, ever: pysyncobj numbers replicated methods
        # by sorted name, so adding another would renumber journal entries.
        @replicated  # type: ignore[untyped-decorator]  # pysyncobj ships no type hints
        def apply_command(self, command: bytes) -> Any:
            # During apply raftLastApplied still names the previous entry.
            index = self.raftLastApplied + 1
            owner = self._hc_owner()
            if owner is None:
                return None  # the replica is gone, and with it whoever waited
            return owner.apply_entry(command, index)

    return Node


_node_class: type | None = None


def node_class() -> type:
    global _node_class
    if _node_class is None:
        _node_class = _make_node_class()
    return _node_class
