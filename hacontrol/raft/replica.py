"""The one place that touches pysyncobj."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from hacontrol.raft import dump, orphans, prepare_gate
from hacontrol.raft.config import JournalKind, ReplicaConfig
from hacontrol.raft.journal import DurableJournal, SyncedJournal, make_mmap_journal
from hacontrol.raft.listen import bind_address, not_listening
from hacontrol.raft.long_apply import LongApply
from hacontrol.raft.membership import MEMBERSHIP_TYPE, MemberBook, MemberInfo
from hacontrol.raft.node import node_class
from hacontrol.raft.readindex import ReadCallback, ReadOutcome
from hacontrol.raft.safety import install_fence, require_secret
from hacontrol.raft.stall import Sample as StallSample
from hacontrol.raft.stall import StallReporter, thread_ident
from hacontrol.raft.storage import StorageError
from hacontrol.raft.wake import WakePipe
from hacontrol.raft.watch import install_watch, watch, weak_wake

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Mirrors pysyncobj.config.FAIL_REASON, kept here so callers need not import it.
FAIL_SUCCESS = 0
FAIL_QUEUE_FULL = 1
FAIL_MISSING_LEADER = 2
FAIL_DISCARDED = 3
FAIL_NOT_LEADER = 4
FAIL_LEADER_CHANGED = 5
FAIL_REQUEST_DENIED = 6
FAIL_UNKNOWN_OUTCOME = orphans.UNKNOWN_OUTCOME
FAIL_NAMES = dict(enumerate(["SUCCESS", "QUEUE_FULL", "MISSING_LEADER", "DISCARDED",
                             "NOT_LEADER", "LEADER_CHANGED", "REQUEST_DENIED", "UNKNOWN_OUTCOME"]))

_ROLES = {0: "follower", 1: "candidate", 2: "leader"}


class Machine(Protocol):
    def apply(self, command: bytes, index: int) -> Any: ...  # never raises; msgpack-able result

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class Applied:
    index: int
    result: Any


@dataclass(frozen=True)
class ApplyError:
    """Result stored when the machine broke its never-raise contract."""

    error: str


@dataclass(frozen=True)
class RaftStatus:
    node_id: str
    raft_addr: str
    role: str  # 'leader' | 'follower' | 'candidate'
    leader: str | None
    term: int
    commit_index: int
    applied_index: int
    healthy: bool
    ready: bool
    unhealthy_reason: str | None = None


SubmitCallback = Callable[[Applied | None, int], None]


class Replica(prepare_gate.Preparing):
    """A Raft replica of ``machine``; construct it in the main thread.

    When its files are damaged (or the disk fails later), ``storage_error`` says why; the
    replica then takes no part in Raft, ``read`` raises StorageError, ``submit`` fails
    with MISSING_LEADER and ``status()`` is neither healthy nor ready. Serve nothing.
    """

    storage_error: str | None

    def __init__(self, config: ReplicaConfig, machine: Machine,
                 book: MemberBook | None = None) -> None:
        """`book`: who the members are (ids and API URLs); by default the configured peers,
        named by their Raft address, and nothing recorded on disk."""
        require_secret(config.secret)
        tuning = config.tuning
        install_fence(tuning.max_frame_bytes, tuning.handshake_timeout,
                      tuning.max_pending_connections)
        install_watch()
        if threading.current_thread() is not threading.main_thread():
            # pysyncobj's tick thread exits when its creating thread exits.
            logger.warning("Replica created outside the main thread; it dies with that thread")

        from pysyncobj import SyncObjConf

        self.config = config
        self.machine = machine
        self.lock = threading.RLock()  # held across a batch of applies, taken by each
        self._apply_deferred = False
        self._tuning = tuning
        self._tick_thread_id: int | None = None
        self._last_tick = time.monotonic()
        self._tick_failures = 0
        self._unhealthy: str | None = None
        self._waker = WakePipe()
        self._destroyed = False
        self._stalls: StallReporter | None = None  # started once the node exists
        self._snapshot: tuple[str, str | None, int, int, int] | None = None
        self._snapshot_loaded = False
        self.storage_error = None
        self._node: Any = None
        self.book = book or MemberBook(None, MemberInfo(config.node_id, config.raft_addr, ""),
                                       [MemberInfo(p, p, "") for p in config.peers])
        # raft address -> (match index, seconds since it answered, connected): the
        # leader's view of its followers, copied on the tick thread; {} elsewhere.
        self._peer_view: dict[str, tuple[int, float | None, bool]] = {}
        self._tick_calls: deque[Callable[[], None]] = deque()
        self._apply_listeners: list[Callable[[], None]] = []

        config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.journal = self._open_journal()
        except StorageError as exc:
            self.storage_error = str(exc)
            logger.critical("replica %s does not start: %s", config.node_id, exc)
            return
        conf = SyncObjConf(
            password=config.secret,
            journalFile=str(config.journal_path),
            fullDumpFile=str(config.dump_path),
            serializer=self._write_dump,
            deserializer=self._read_dump,
            # Forking a process that runs asyncio and other threads is unsafe
            # (locks held by other threads stay locked in the child), and our
            # snapshots are small msgpack blobs; pysyncobj also never forks
            # with a custom serializer, this makes the choice explicit.
            useFork=False,
            dynamicMembershipChange=True,
            bindAddress=bind_address(config.raft_addr),
            **tuning.syncobj_kwargs(),
        )
        self._node = node_class()(self, config.raft_addr, list(config.peers), conf,
                                  self.journal,
                                  large=LongApply(tuning.heartbeat_before_bytes,
                                                  tuning.long_apply_grace))
        self._node.addOnTickCallback(self._on_tick)
        self._disable_admin_commands()
        watch.replicas.add(self)
        self._stalls = StallReporter(config.node_id, self._progress_sample,
                                     lambda: self._tick_thread_id or thread_ident(self._node))
        self._stalls.start()

    def listening(self) -> bool:
        """Whether the Raft port is bound: until then peers cannot reach this replica."""
        return self._node is not None and not_listening(self._node) is None

    def _progress_sample(self) -> StallSample | None:
        """For the stall reporter (its own thread): None once destroyed."""
        if self._destroyed or self._node is None:
            return None
        st = self.status()
        return StallSample(time.monotonic(), self._last_tick, st.applied_index, st.commit_index,
                           st.leader, int(self._node._SyncObj__leaderCommitIndex or 0),
                           not_listening(self._node))

    def _open_journal(self) -> SyncedJournal:
        config = self.config
        if config.journal_kind == JournalKind.MMAP:
            journal: SyncedJournal = make_mmap_journal(config.journal_path, config.durability)
            return journal
        durable = DurableJournal(config.journal_path, config.meta_path, config.durability)
        # The leader's fdatasync runs there, off the tick thread; each finished sync wakes
        # the tick thread to count it. Weakly: it must not keep a dropped replica alive.
        durable.start_sync_thread(weak_wake(weakref.ref(self)))
        return durable

    @property
    def durable(self) -> bool:
        """Whether acknowledged writes and votes survive a power cut (False: test only)."""
        return self.config.durability.durable and self.config.journal_kind == JournalKind.FILE

    # ---- tick thread side -------------------------------------------------

    def on_storage_error(self, message: str) -> None:
        """The journal failed: stop serving. Runs on the tick thread, which then ends."""
        self.storage_error = message
        logger.critical("replica %s stops: %s", self.config.node_id, message)
        orphans.fail_all(self._node)

    def apply_entry(self, command: bytes, index: int) -> Applied:
        # An exception escaping a replicated method makes pysyncobj retry the
        # same entry forever; turn every failure into a result value.
        try:
            with self.lock:
                result = self.machine.apply(bytes(command), index)
        except Exception as exc:
            logger.exception("state machine raised applying index %d", index)
            result = ApplyError(f"{type(exc).__name__}: {exc}")
        return Applied(index, result)

    def after_apply(self) -> None:
        for listener in self._apply_listeners:
            try:
                listener()
            except Exception:
                logger.exception("apply listener failed")

    def _on_tick(self) -> None:
        node = self._node
        # Role, term and indexes change together on this thread; readers on other threads
        # get this tick's consistent copy instead of a torn mix (e.g. "leader" from before
        # and the new term from after a step-down, which looks like two leaders per term).
        try:
            leader = node._getLeader()
            before = self._snapshot
            self._snapshot = (_ROLES.get(node._SyncObj__raftState, "follower"),
                              getattr(leader, "address", None) if leader is not None else None,
                              int(node.raftCurrentTerm), int(node.raftCommitIndex),
                              int(node.raftLastApplied))
            if self._snapshot[0] == "candidate" and (before is None or before[0] != "candidate"):
                logger.info("replica %s campaigns for term %d (%s)", self.config.node_id,
                            self._snapshot[2], node.hc_silence())
        except Exception:
            logger.exception("status snapshot failed")
        if self._tick_thread_id is None:
            self._tick_thread_id = threading.get_ident()
            self._waker.attach(self._node._poller)
        self._last_tick = time.monotonic()
        self._tick_failures = 0
        while self._tick_calls:
            try:
                self._tick_calls.popleft()()
            except Exception:
                logger.exception("tick call failed")
        try:
            self._peer_view = node.hc_peer_view() if node._SyncObj__raftState == 2 else {}
        except Exception:
            logger.exception("peer view failed")
        if self._snapshot_loaded:
            self._snapshot_loaded = False
            orphaned = orphans.fail_applied(node)
            if orphaned:
                logger.info("snapshot installed: %d waiting commands reported as unknown",
                            orphaned)
        try:
            node.hc_read_step()
        except Exception:
            logger.exception("read index step failed")
        if not self._tuning.group_commit or node._SyncObj__raftState != 2:
            return
        try:
            node.hc_push()
        except Exception:
            logger.exception("group-commit push failed")
        # The leader's sync thread writes these while the followers do (node.py).
        node.hc_flush()

    def _wake(self) -> None:
        self._waker.wake()

    def _on_pysyncobj_log(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.CRITICAL and "truncating already-applied" in msg:
            self._unhealthy = "applied log entries were truncated; state may have diverged"
        elif "failed _onTick" in msg:
            self._tick_failures += 1
        elif "failed to load full dump" in msg:
            self._unhealthy = "failed to load the full dump"

    def _write_dump(self, file_name: str, data: tuple[Any, ...]) -> None:
        # Runs on the tick thread, so the snapshot matches the last applied index exactly.
        with self.lock:
            state = self.machine.snapshot()
        dump.write(file_name, data, state, self.book.dump_fields())

    def _read_dump(self, file_name: str) -> tuple[Any, ...]:
        last, prev, cluster, members, state = dump.read(file_name)
        with self.lock:
            self.machine.restore(state)
        self._snapshot_loaded = True
        self.book.reset(cluster, MemberBook.from_dump_fields(members))
        # Without ourselves: pysyncobj compares these strings with its own Node and
        # would count this replica among its peers.
        return last, prev, [a for a in cluster if a != self.config.raft_addr]

    def _disable_admin_commands(self) -> None:
        # Anyone holding the secret could otherwise transfer leadership or
        # request an unsupported code version (which stalls every replica).
        transport = self._node._SyncObj__transport
        for name in ("add", "remove", "set_version", "transfer"):
            transport.setOnUtilityMessageCallback(name, None)

    # ---- any thread ---------------------------------------------------------

    def on_membership(self, request: Any, reverse: bool) -> None:
        """Tick thread: a membership entry was appended here (or rolled back)."""
        self.book.on_change(request, reverse)
        self._wake()

    def add_apply_listener(self, listener: Callable[[], None]) -> None:
        """`listener()` runs on the tick thread after each batch of applied entries, once
        the callbacks of their submitters have fired (results handed to waiting writers
        go out before what the listener wakes). Register before the replica runs."""
        self._apply_listeners.append(listener)

    def is_voter(self) -> bool:
        return self.book.is_member()

    def peer_view(self) -> dict[str, tuple[int, float | None, bool]]:
        """The leader's view of each follower (see hc_peer_view); {} on a follower."""
        return self._peer_view

    def transfer_leadership(self, target: str | None, callback: SubmitCallback) -> None:
        """Ask the most caught-up follower (or `target`) to take over; the callback says
        whether the request went out (pysyncobj's `transferLeadership`). Thread-safe."""
        if self._node is None or self._destroyed:
            _safe_call(callback, None, FAIL_NOT_LEADER)
            return
        self._tick_calls.append(lambda: self._node.transferLeadership(
            target, callback=lambda res, err: _safe_call(callback, None, err)))
        self._wake()

    def submit(self, command: bytes, callback: SubmitCallback, membership: bool = False
               ) -> None:
        """Queue ``command``; ``callback(applied, fail_reason)`` fires once.

        Non-blocking and thread-safe. The callback usually runs on the tick
        thread (QUEUE_FULL fires in the caller's thread) and must be quick.
        """
        if len(command) > self._tuning.max_command_bytes:
            raise ValueError(
                f"command of {len(command)} bytes exceeds {self._tuning.max_command_bytes}"
            )
        if self._destroyed or self.storage_error is not None:
            _safe_call(callback, None, FAIL_MISSING_LEADER)
            return

        def on_result(res: Any, err: int) -> None:
            # Never let a callback raise into pysyncobj: during apply that would
            # re-apply the same entry on the next tick.
            if err == FAIL_SUCCESS and not isinstance(res, Applied):
                res = Applied(self._node.raftLastApplied, res)
            _safe_call(callback, res if err == FAIL_SUCCESS else None, err)

        if membership:
            # The body of a MEMBERSHIP entry (membership.change_payload), never the machine's.
            self._node._applyCommand(bytes(command), on_result, MEMBERSHIP_TYPE)
        else:
            self._node.apply_command(bytes(command), callback=on_result)
        self._wake()

    def read_index(self, callback: ReadCallback) -> None:
        """Ask for a ReadIndex (see readindex.py); ``callback(index, outcome)`` fires once,
        on the tick thread (or here when this replica serves nothing). Thread-safe."""
        if self._destroyed or self.storage_error is not None or self._node is None:
            callback(0, ReadOutcome.NOT_LEADER)
            return
        if self._node.hc_read_index(callback):
            self._wake()

    @property
    def read_index_rounds(self) -> int:
        """ReadIndex rounds confirmed by a majority since start (0 on a follower)."""
        return int(self._node.hc_read_rounds) if self._node is not None else 0

    def read(self, fn: Callable[[Machine], T]) -> T:
        """``fn(machine)`` under the lock; StorageError when the state cannot be trusted."""
        if self.storage_error is not None:
            raise StorageError(self.storage_error)
        try:
            with self.lock:
                return fn(self.machine)
        finally:
            if self._apply_deferred:
                self._wake()  # the tick thread put off its applies for this read

    def hold_state(self, wait_s: float) -> bool:
        """Tick thread: the state lock for a batch of applies (`release_state` after), or
        False when a read holds it past `wait_s`: the read's end then wakes the thread."""
        held = self.lock.acquire(timeout=wait_s)
        self._apply_deferred = not held
        return held

    def release_state(self) -> None:
        self.lock.release()

    def status(self) -> RaftStatus:
        node = self._node
        healthy, reason = self._health()
        if node is None:
            return RaftStatus(self.config.node_id, self.config.raft_addr, "follower", None, 0,
                              0, 0, healthy=False, ready=False, unhealthy_reason=reason)
        snap = self._snapshot
        if snap is None:
            leader = node._getLeader()
            snap = (_ROLES.get(node._SyncObj__raftState, "follower"),
                    getattr(leader, "address", None) if leader is not None else None,
                    int(node.raftCurrentTerm), int(node.raftCommitIndex),
                    int(node.raftLastApplied))
        role, leader_addr, term, commit, applied = snap
        return RaftStatus(
            node_id=self.config.node_id,
            raft_addr=self.config.raft_addr,
            role=role,
            leader=leader_addr,
            term=term,
            commit_index=commit,
            applied_index=applied,
            healthy=healthy,
            ready=bool(node.isReady()) and self.storage_error is None,
            unhealthy_reason=reason,
        )

    def _health(self) -> tuple[bool, str | None]:
        if self.storage_error is not None:
            return False, f"storage: {self.storage_error}"
        if self._destroyed:
            return False, "destroyed"
        if self._unhealthy is not None:
            return False, self._unhealthy
        broken = getattr(self.machine, "broken", None)
        if broken:
            return False, broken
        if not self._node.tick_thread_alive():
            return False, "tick thread is not running"
        unbound = not_listening(self._node)
        if unbound is not None:
            return False, unbound
        if self._tick_failures >= self._tuning.max_consecutive_tick_failures:
            return False, f"{self._tick_failures} consecutive tick failures"
        stalled = time.monotonic() - self._last_tick
        if stalled > self._tuning.tick_stall_seconds:
            return False, f"no tick for {stalled:.1f} s"
        return True, None

    def force_compaction(self) -> None:
        if self._node is not None:
            self._node.forceLogCompaction()

    def destroy(self) -> None:
        if self._destroyed:
            return
        self._destroyed = True
        if self._stalls is not None:
            self._stalls.stop()
        if self._node is None:
            return
        watch.replicas.discard(self)
        self._node.removeOnTickCallback(self._on_tick)
        thread = self._node._SyncObj__thread
        self._node.destroy()
        # The tick thread sees the flag at its next tick: wake it rather than wait out
        # its poll period.
        self._waker.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
        self._waker.close()


def _safe_call(callback: SubmitCallback, res: Applied | None, err: int) -> None:
    try:
        callback(res, err)
    except Exception:
        logger.exception("raft submit callback raised")
