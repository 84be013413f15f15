"""Replica configuration and pysyncobj tuning.

Figures quoted below were measured on a 2-core machine, 3 replicas as separate
processes on 127.0.0.1, journal and dump on disk (see bench/raft_raw.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hacontrol.raft.handshake import DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING
from hacontrol.raft.safety import DEFAULT_MAX_FRAME_BYTES


@dataclass(frozen=True)
class RaftTuning:
    # Election timeouts, for a leader that is silent but whose process lives (a pause, a
    # partition, a dead host). A leader whose process died closes its links, and its
    # followers elect at once instead (fast_failover.py: kill -9 to the next write in
    # about 80 ms, bench/failover.py). 0.25-0.5 s, tuned for that failover before
    # fast_failover.py existed, held elections every few seconds at scale: with 5,000
    # nodes syncing (bench/scheduler.py --scale) a leader starved of the GIL and of a core
    # sent its heartbeats 0.3-0.4 s late, and 5,000 registrations took 30 elections
    # in 2 min against one (the first) with 1-2 s. etcd's default is 1 s; the first
    # follower to time out wins the (single) round, so a silent leader is replaced in
    # about 1.3 s, as etcd's default takes.
    raft_min_timeout: float = 1.0
    raft_max_timeout: float = 2.0
    # Heartbeat. A follower's commit index is at most commit_push.DELAY_S stale
    # (see group_commit).
    append_entries_period: float = 0.05
    # A leader cut off from the majority steps down after this long instead of
    # pysyncobj's 30 s (the longest election timeout: a majority that lost it has elected
    # by then); Raft terms still arbitrate the overlap.
    leader_fallback_timeout: float = 2.0
    # Follower-to-follower links are idle between elections; pysyncobj's idle
    # check also runs on send, so any finite value tears down the link carrying
    # the first request_vote and every election needs a second round. Dead
    # peers are detected by TCP keepalive and RST instead.
    connection_timeout: float = 10.0**9
    tcp_keepalive: tuple[int, int, int] = (2, 1, 3)
    # Only the node with the greater address dials, so a restarted replica may
    # wait this long for its peers to come back; 5 s default slowed catch-up.
    connection_retry_time: float = 0.5
    # Poll timeout of the tick thread; submissions wake it through a pipe, so
    # this only bounds timer resolution.
    auto_tick_period: float = 0.05
    # Group commit: batched appends (throughput) plus an immediate append as
    # soon as a tick has queued new entries, and a commit index alone a few ms
    # later unless entries carry it first (commit_push.py); submissions wake
    # the tick thread through a pipe. Measured on
    # the leader, 100 B commands, 1000 in flight: 38-66k commits/s raw, 15k/s
    # through LogBridge, sequential p50/p99 0.4-0.5/1.0-1.7 ms. Without it
    # (plain batching, this heartbeat period): 15k/s and p50 52 ms, since a
    # write waits for the next heartbeat; appendEntriesUseBatch=False gives
    # ~1.2 ms but one message per command (2.6k/s).
    group_commit: bool = True
    # Waiting for a leader hides elections in an unbounded queue (#75); we fail
    # fast with a definite "not applied" and let the bridge retry.
    commands_wait_leader: bool = False
    commands_queue_size: int = 20_000
    append_entries_batch_size_bytes: int = 2**16
    log_compaction_min_entries: int = 5000
    log_compaction_min_time: float = 300.0
    # As `state.commands.MAX_COMMAND_BYTES`, which every replica decodes: a restore is one
    # entry holding the deflated state (10,000 jobs: ~1 MB); job specs stay capped at 1 MiB
    # by the API's body limit. A 4 MiB entry is a ~4 MiB frame (~5.5 MiB with an hcraft1
    # key's Fernet base64), well under the frame cap.
    max_command_bytes: int = 4 * 1024 * 1024
    # A restore of 10,000 jobs (one ~1 MB entry) takes every replica a second or more to
    # apply on its tick thread: the leader sends AppendEntries before applying an entry
    # this large, and after an apply of `took` seconds every replica expects
    # `long_apply_grace * took` more of silence before it elects or steps down
    # (long_apply.py; `make bench-snapshot` measures it against 0/0, which disables both).
    heartbeat_before_bytes: int = 64 * 1024
    long_apply_grace: float = 1.0
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    # An accepted Raft connection that has not completed its encrypted handshake
    # within this long is closed; a peer needs one round trip (milliseconds), so
    # this only has to cover a tick thread busy with a snapshot. Process-wide:
    # the first replica started in a process sets it (see handshake.py).
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    # Accepted connections still in their handshake beyond this many: the
    # oldest is closed, so idle sockets cannot exhaust file descriptors.
    max_pending_connections: int = DEFAULT_MAX_PENDING
    # The tick thread counts as wedged when it has not completed a tick for
    # this long, or failed this many ticks in a row.
    tick_stall_seconds: float = 3.0
    max_consecutive_tick_failures: int = 3

    def syncobj_kwargs(self) -> dict[str, Any]:
        return {
            "raftMinTimeout": self.raft_min_timeout,
            "raftMaxTimeout": self.raft_max_timeout,
            "appendEntriesPeriod": self.append_entries_period,
            "leaderFallbackTimeout": self.leader_fallback_timeout,
            "connectionTimeout": self.connection_timeout,
            "tcp_keepalive": self.tcp_keepalive,
            "connectionRetryTime": self.connection_retry_time,
            "autoTickPeriod": self.auto_tick_period,
            "appendEntriesUseBatch": True,
            "appendEntriesBatchSizeBytes": self.append_entries_batch_size_bytes,
            "commandsWaitLeader": self.commands_wait_leader,
            "commandsQueueSize": self.commands_queue_size,
            "logCompactionMinEntries": self.log_compaction_min_entries,
            "logCompactionMinTime": self.log_compaction_min_time,
        }


# Planted faults (see hacontrol/planted.py) that live in the storage layer.
NO_FSYNC = "no-fsync"  # journal appends are written but never fsynced
VOTE_NO_FSYNC = "vote-no-fsync"  # term and vote written and renamed, never fsynced


@dataclass(frozen=True)
class Durability:
    """What is fsynced. The default syncs everything; anything else is test-only.

    `fsync_journal`: appended entries are fdatasync'ed before a follower acknowledges
    them and before the leader counts itself toward their commit quorum.
    `fsync_meta`: term, vote and commit index are fsynced (file and directory) before
    a vote is granted or a message of a new term is sent.
    The dump (snapshot) is always written durably: it happens rarely.
    """

    fsync_journal: bool = True
    fsync_meta: bool = True

    @property
    def durable(self) -> bool:
        return self.fsync_journal and self.fsync_meta

    @classmethod
    def choose(cls, unsafe_no_fsync: bool = False, plant: str | None = None) -> Durability:
        """From the server's test-only switches (checked by the caller)."""
        if unsafe_no_fsync:
            return cls(fsync_journal=False, fsync_meta=False)
        if plant == NO_FSYNC:
            return cls(fsync_journal=False)
        if plant == VOTE_NO_FSYNC:
            return cls(fsync_meta=False)
        return cls()


class JournalKind(StrEnum):
    # Append-only file, checksummed records, fdatasync: the one to run.
    FILE = "file"
    # pysyncobj's own mmap journal, msync'ed at the same points: no checksums, no torn
    # tail detection; kept only so the benchmark can compare the two.
    MMAP = "mmap"


@dataclass
class ReplicaConfig:
    node_id: str
    raft_addr: str  # "host:port", also this replica's identity in the cluster
    peers: list[str]  # raft addresses of the other members
    data_dir: Path
    secret: str
    tuning: RaftTuning = field(default_factory=RaftTuning)
    durability: Durability = field(default_factory=Durability)
    journal_kind: JournalKind = JournalKind.FILE

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "raft.journal"

    @property
    def meta_path(self) -> Path:
        # term, vote, commit index
        return self.data_dir / "raft.journal.meta"

    @property
    def dump_path(self) -> Path:
        return self.data_dir / "raft.dump"
