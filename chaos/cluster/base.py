"""What the chaos suite needs from a cluster under test, whatever runs it.

A backend starts controller replicas (and agents) as real OS processes, and injects faults
into them: kill, pause, network partitions, packet loss. The workload and the nemesis talk
only to this interface, so the same run can target plain processes on 127.0.0.x, network
namespaces joined by a bridge, or containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Capabilities a backend may offer; a nemesis needing one it lacks is refused up front.
KILL = "kill"
PAUSE = "pause"
PARTITION = "partition"
LOSS = "loss"
# Replicas on power-loss mounts (chaos.lazyfs): a power cut loses what was not synced.
POWER = "power"
# Replicas started with `--join` and retired once removed (the `membership` nemesis).
MEMBERSHIP = "membership"


@dataclass
class Member:
    name: str  # "c1".."cN" for replicas, "n1".. for agents
    kind: str  # "replica" | "agent"
    host: str  # the address the process binds and peers use
    api_url: str | None  # replicas: http://host:port
    raft_addr: str | None  # replicas: host:port
    log_path: Path
    data_dir: Path
    pid: int | None = None


@dataclass
class ClusterSpec:
    replicas: int = 3
    agents: int = 0
    workdir: Path = Path("/tmp/hacontrol-chaos")
    token: str = ""
    secret: str = ""
    # extra arguments for every `hacontrol server` (e.g. a planted fault)
    server_args: list[str] = field(default_factory=list)
    # extra environment for every process started
    env: dict[str, str] = field(default_factory=dict)
    # Serve each replica's data dir from a power-loss mount (needs FUSE; see chaos.lazyfs).
    power_loss_fs: bool = False
    agent_cpu: float = 4.0
    agent_memory_mb: int = 4096


class Backend(Protocol):
    name: str
    capabilities: frozenset[str]

    def setup(self, spec: ClusterSpec) -> list[Member]:
        """Create the network (if any) and start every member; returns them."""

    def members(self) -> list[Member]:
        """The members in play: every agent, and every replica not retired."""

    def add_replica(self, join: list[str]) -> Member:
        """Start a new replica, with an id and an address never used before, that asks the
        cluster to add it (`hacontrol server --join` with `join`, API URLs). Needs
        `MEMBERSHIP`."""

    def retire(self, name: str) -> None:
        """SIGKILL a replica the cluster removed and stop tracking it: it leaves `members()`
        for `retired()` (its log and data dir stay) and is never restarted."""

    def retired(self) -> list[Member]: ...

    def start(self, name: str) -> None:
        """(Re)start a member that is not running, with its data dir intact."""

    def kill(self, name: str) -> None:
        """SIGKILL the member's process and reap it."""

    def power_cut(self, names: list[str]) -> None:
        """SIGKILL these replicas, then revert their disks to what was synced.

        They stay down, their data dirs readable, until `start`. Needs `POWER` and a spec
        with `power_loss_fs`.
        """

    def stall_disk(self, name: str, on: bool = True) -> None:
        """Make the replica's fsyncs wait (reads and writes go on) until lifted or its power
        is cut. Needs `POWER`."""

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def alive(self, name: str) -> bool: ...

    def partition(self, groups: list[set[str]]) -> None:
        """Cut traffic between replicas/agents that share no group.

        A member in two groups sees both (a bridge). Members not named in any group are
        isolated from everyone. The test client on the host can always reach every member.
        Replaces any partition already in place.
        """

    def loss(self, name: str, percent: int) -> None:
        """Drop `percent`% of the member's inbound and outbound packets at random."""

    def heal(self) -> None:
        """Remove every partition and loss rule."""

    def teardown(self) -> None:
        """Stop every process (by pid) and remove every namespace, rule and link.

        Idempotent; must work after a failure half-way through setup.
        """
