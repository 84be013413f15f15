"""The controller replica: log writes and reads for the API and the leader loop.

Everything here speaks in commands and results; failures are the domain errors of
`errors.py`, never HTTP. The API and the leader loop reach this class only through the
small protocols they declare (`hacontrol/api/backend.py`, `hacontrol/scheduler/loop.py`).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from hacontrol.model import protocol
from hacontrol.model.errors import Rejection
from hacontrol.observe.metrics import ServerMetrics
from hacontrol.raft.bridge import ApplyFailed, LogBridge, RaftError
from hacontrol.raft.bridge import NotApplied as LogNotApplied
from hacontrol.raft.bridge import OutcomeUnknown as LogOutcomeUnknown
from hacontrol.raft.replica import Replica
from hacontrol.raft.storage import StorageError
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from .changes import ChangeFeed
from .errors import CommandFailed, NoQuorum, NotApplied, OutcomeUnknown, Unsupported
from .status import Member, MemberView, ReplicaStatus
from .versions import CapabilityWatch

T = TypeVar("T")
Result = dict[str, Any]

WRITE_TIMEOUT_S = 5.0
# Commands larger than this go alone (a group's bytes are replicated and applied as one).
GROUP_BYTES = 512 * 1024
READ_TIMEOUT_S = 5.0
_NOOP = C.Command(C.NOOP, 0.0, {}, v=protocol.spoken()).encode()


class Controller:
    """This replica's state machine behind its Raft log."""

    def __init__(self, me: Member, peers: list[Member], replica: Replica,
                 machine: StateMachine, metrics: ServerMetrics | None = None) -> None:
        """`metrics`: where commit latencies are recorded (none when not given)."""
        self.me = me
        self.id = me.id
        # Who the members are is the replica's membership book (it changes with the log);
        # `peers` are those this process was started with.
        self.configured_peers = peers
        self.replica = replica
        self.machine = machine
        self.bridge = LogBridge(replica)
        self.metrics = metrics
        self._changes: ChangeFeed | None = None
        self._applied = False  # entries applied since the waiters were last woken
        # Generated idempotency keys: unique per process start, cheaper than uuid4.
        self._key_prefix = f"{me.id}-{uuid.uuid4().hex[:12]}-"
        self._key_seq = itertools.count(1)
        # Every voter's protocol and command types (their reports; run() it to poll them).
        self.versions = CapabilityWatch(me.id, lambda: {m.id: m.api for m in self.replica.book.members()})
        # A restore proposed here is decoded by the peers too before it reaches them.
        machine.preparer.share = lambda body: self.replica.share_prepare(body)
        self._grouper = Grouper(self.bridge, lambda: self.versions.refusal(C.GROUP) is None,
                                self.versions.mine.protocol)

    # ----------------------------------------------------------- change feed

    def attach_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._changes = ChangeFeed(loop)
        self.machine.on_applied = self._on_applied
        self.replica.add_apply_listener(self._after_apply)

    def _on_applied(self, index: int, cmd: C.Command | None) -> None:
        # Runs on the Raft tick thread, inside the apply: the waiters are woken only once
        # the batch's results are on their way to the writers (`_after_apply`). Woken
        # first, the leader loop's pass over the state ran on the event loop before the
        # write's answer (a tenth of a millisecond to several on a busy machine).
        self._applied = True

    def _after_apply(self) -> None:
        # Tick thread, after the results of the entries just applied were handed over.
        if self._applied and self._changes is not None:
            self._applied = False
            self._changes.notify()

    async def wait_changed(self, timeout: float) -> None:
        """Return once an entry is applied here (or a local event added), or at `timeout`."""
        assert self._changes is not None, "attach_loop first"
        await self._changes.wait(timeout)

    def local_event(self, kind: str, **payload: Any) -> None:
        """An event only this replica saw (e.g. it became leader); not replicated."""
        def add(m: StateMachine) -> None:
            m.add_event({"index": m.index, "ts": time.time(), "type": kind, **payload})
        self.read_local(add)
        if self._changes is not None:
            self._changes.notify_now()

    # ----------------------------------------------------------------- raft

    def status(self) -> ReplicaStatus:
        st = self.replica.status()
        book = self.replica.book
        leader = book.by_raft(st.leader) if st.leader else None
        members: list[MemberView] = [{"id": m.id, "raft": m.raft, "api": m.api}
                                     for m in book.members()]
        out: ReplicaStatus = {
            "id": self.me.id,
            "role": st.role,
            "leader": leader.id if leader else None,
            "leader_api": leader.api if leader else None,
            "term": st.term,
            "commit_index": st.commit_index,
            "applied_index": st.applied_index,
            "healthy": st.healthy,
            "durable": self.replica.durable,
            "storage_error": self.replica.storage_error,
            "pid": os.getpid(),
            "members": members,
            "member": book.is_member(),
        }
        if protocol.versioned():  # protocol 1 published no version and no capabilities
            out["protocol"] = self.versions.mine.protocol
            out["ops"] = sorted(self.versions.mine.ops)
            seen = self.versions.status()
            out["member_protocols"] = seen["member_protocols"]
            out["ops_waiting"] = seen["ops_waiting"]
        return out

    def is_leader(self) -> bool:
        return self.replica.status().role == "leader"

    def term(self) -> int:
        return self.replica.status().term

    def leading_term(self) -> int | None:
        """The term this replica leads, or None when it does not lead (one status read)."""
        st = self.replica.status()
        return st.term if st.role == "leader" else None

    # --------------------------------------------------------- writes, reads

    def command(self, op: str, args: dict[str, Any], idem: str | None = None,
                actor: str | None = None) -> C.Command:
        """The command as it goes into the log: stamped with the time, a key and the
        accessor id of the token it acts for (None: the controllers themselves)."""
        return C.Command(op, time.time(), args,
                         idem or f"{self._key_prefix}{next(self._key_seq)}", actor,
                         self.versions.mine.protocol)

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    timeout: float = WRITE_TIMEOUT_S, actor: str | None = None) -> Result:
        """Propose a command and return its result once applied here.

        Raises `Rejection` when the state machine refuses it (including a token that may
        not, checked at apply), `NotApplied`, `OutcomeUnknown` or `CommandFailed` after
        what the log did with it, or `Unsupported` when a voter does not know `op` yet.
        """
        for needed in (op, *C.spec_features(op, args)):
            refused = await self.versions.settled_refusal(needed)
            if refused is not None:
                raise Unsupported(refused)
        cmd = self.command(op, args, idem, actor)
        start = time.perf_counter()
        try:
            result = await self._grouper.submit(cmd.encode(), timeout, _group_key(op, args))
            if self.metrics is not None:
                self.metrics.commit.observe(time.perf_counter() - start)
        except LogNotApplied as exc:
            raise NotApplied(str(exc), self.status()["leader"]) from None
        except LogOutcomeUnknown as exc:
            raise OutcomeUnknown(str(exc), cmd.idem or "") from None
        except ApplyFailed as exc:
            raise CommandFailed(f"apply failed: {exc}") from None
        if not isinstance(result, dict):
            raise CommandFailed(f"unexpected apply result {result!r}")
        if not result.get("ok"):
            err = result.get("error") or {}
            raise Rejection(err.get("code", "internal"), err.get("message", ""),
                            err.get("field"))
        return result

    async def propose(self, op: str, args: dict[str, Any]) -> Result:
        """A write with a generated idempotency key (what the leader loop proposes)."""
        return await self.write(op, args)

    async def read(self, fn: Callable[[StateMachine], T], stale: bool = False) -> T:
        """`fn` over the state; linearizable unless `stale` (the leader confirms it still
        leads by a heartbeat round, a follower sends a no-op through the log first).
        Raises `NoQuorum` when neither can be done in time."""
        if not stale:
            try:
                await self.bridge.linearize(_NOOP, READ_TIMEOUT_S)
            except (LogNotApplied, LogOutcomeUnknown) as exc:
                raise NoQuorum(str(exc)) from None
        return self.read_local(fn)

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        """`fn` over the state as applied on this replica so far, under the apply lock."""
        try:
            return self.replica.read(lambda _m: fn(self.machine))
        except StorageError as exc:
            raise NotApplied(f"this replica's storage failed: {exc}", None) from None


# ------------------------------------------------------------------ grouping
#
# Writes proposed in the same turn of the event loop go into the log as one entry. With many
# concurrent writers every command used to be an entry of its own, and each entry costs
# every replica the same again (journal record, replication, commit, apply call) on top of
# what the command itself costs. The `Grouper` collects the job commands proposed until the
# loop's next turn and proposes them as one `GROUP` entry (`state/commands.py`), whose apply
# gives each command its own result, in order; a lone command still goes as the entry it
# always was, one loop turn later (tens of microseconds on an idle replica). Groups are
# proposed only once every voter reports knowing the type (`versions.py`): an older
# replica could not apply one.

# Commands that may share an entry: those about one job, each with others about other jobs,
# and a node's registration or report, each with other nodes' (a report changes only that
# node's allocations). Every change in an entry gets the entry's index as its object's
# `modify_index`, which `check_index` (and the alert rules' `rule_index`) compare as a
# version: two changes of one object in one entry would share it, so a later one could pass
# a check meant for the earlier. Commands of other types go alone, as they always did.
# Nodes' reports are most of the log at scale: 100,000 instances placed with anti-affinity
# are reported by up to 100,000 syncs, and each was an entry of its own (Nomad batches
# its clients' updates into one Raft entry the same way).
GROUPED_OPS = frozenset({C.JOB_PUT, C.JOB_SCALE, C.JOB_DELETE, C.JOB_REVERT})
NODE_OPS = {C.NODE_REGISTER: "name", C.ALLOC_UPDATE: "node"}
# The first part of a node's key: no namespace has this name (`NAME_RE`), so a node's key
# never matches a job's.
NODE_KEY = "node:"


def _group_key(op: str, args: dict[str, Any]) -> tuple[str, str] | None:
    if op in GROUPED_OPS:
        return (str(args.get("namespace")), str(args.get("name")))
    field = NODE_OPS.get(op)
    if field is not None:
        return (NODE_KEY, str(args.get(field)))
    return None


_Waiting = tuple[bytes, float, "asyncio.Future[Any]", tuple[str, str] | None]


class Grouper:
    """Concurrent writes proposed as one `GROUP` entry (see above)."""

    def __init__(self, bridge: LogBridge, allowed: Callable[[], bool], version: int) -> None:
        """`allowed()`: whether a `GROUP` entry may be proposed now; `version`: the
        protocol the group's envelope is stamped with."""
        self._bridge = bridge
        self._allowed = allowed
        self._version = version
        self._waiting: list[_Waiting] = []
        self._proposing: set[asyncio.Task[None]] = set()  # the loop keeps only weak ones

    async def submit(self, command: bytes, timeout: float,
                     key: tuple[str, str] | None = None) -> Any:
        """The command's result once applied here; raises as `LogBridge.submit`. `key`:
        what the command changes (one group holds no two commands of one key); None: it
        goes alone, at once."""
        if key is None:
            return await self._bridge.submit(command, timeout)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        mine: _Waiting = (command, loop.time() + timeout, fut, key)
        self._waiting.append(mine)
        if len(self._waiting) > 1:
            return await fut  # the first writer of this turn proposes it
        # The first writer of a turn yields once, so that the writers the loop runs
        # meanwhile join it, then proposes what gathered: one turn later than alone.
        try:
            await asyncio.sleep(0)
        except BaseException:  # cancelled: the others still go, without this one
            self._launch([w for w in self._take() if w is not mine])
            raise
        await self._propose(self._launch(self._take(), keep=mine))
        return await fut

    def _take(self) -> list[_Waiting]:
        waiting, self._waiting = self._waiting, []
        return waiting

    def _launch(self, waiting: list[_Waiting], keep: _Waiting | None = None
                ) -> list[_Waiting]:
        """Propose `waiting` in chunks, each in a task of its own but the chunk holding
        `keep`, which is returned for the caller to propose itself."""
        chunks = _chunks(waiting) if len(waiting) > 1 and self._allowed() else \
            [[one] for one in waiting]
        own: list[_Waiting] = []
        for chunk in chunks:
            if keep is not None and keep in chunk:
                own = chunk
                continue
            task = asyncio.ensure_future(self._propose(chunk))
            self._proposing.add(task)
            task.add_done_callback(self._proposing.discard)
        return own

    async def _propose(self, chunk: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        remaining = max(min(w[1] for w in chunk) - loop.time(), 0.0)
        if len(chunk) == 1:
            raw = chunk[0][0]
        else:
            raw = C.encode_group(time.time(), [w[0] for w in chunk], self._version)
        try:
            result = await self._bridge.submit(raw, remaining)
        except RaftError as exc:
            _fail(chunk, functools.partial(_again, exc))
            return
        except BaseException as exc:  # cancelled with the loop: tell the writers
            told = exc if isinstance(exc, Exception) else LogOutcomeUnknown(type(exc).__name__)
            _fail(chunk, lambda: told)
            raise
        if len(chunk) == 1:
            _resolve(chunk[0][2], result)
            return
        results = result.get("results") if isinstance(result, dict) else None
        if not isinstance(results, list) or len(results) != len(chunk):
            # The whole entry was refused (malformed): nothing of it applied.
            _fail(chunk, lambda: ApplyFailed(f"group refused: {result!r}", 0))
            return
        for (*_, fut, _key), one in zip(chunk, results, strict=True):
            _resolve(fut, one)


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(chunk: list[_Waiting], error: Callable[[], BaseException]) -> None:
    """Every writer of `chunk` still waiting gets `error()`."""
    for *_, fut, _key in chunk:
        if not fut.done():
            fut.set_exception(error())


def _again(exc: RaftError) -> RaftError:
    """A fresh exception per waiting writer (one raised in several tasks would collect
    every task's traceback)."""
    if isinstance(exc, ApplyFailed):
        return ApplyFailed(exc.reason, exc.index)
    if isinstance(exc, LogNotApplied):
        return LogNotApplied(exc.reason)
    return LogOutcomeUnknown(exc.reason)


def _chunks(waiting: list[_Waiting]) -> list[list[_Waiting]]:
    out: list[list[_Waiting]] = []
    cur: list[_Waiting] = []
    keys: set[tuple[str, str]] = set()
    size = 0
    for item in waiting:
        n, key = len(item[0]), item[3]
        alone = key is None or n > GROUP_BYTES // 4
        if cur and (alone or len(cur) >= C.MAX_GROUP or size + n > GROUP_BYTES
                    or key in keys):
            out.append(cur)  # proposed in the order they came
            cur, keys, size = [], set(), 0
        if alone or key is None:  # (`alone` covers it; said again for the type checker)
            out.append([item])
            continue
        cur.append(item)
        keys.add(key)
        size += n
    if cur:
        out.append(cur)
    return out
