"""Three real replicas in one test process: real sockets and journals, a key-value machine.

For tests that reach into a replica (its pysyncobj node, its transport, its timers), which a
replica in another process would hide; `cluster.py` runs them as processes instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack

from hacontrol.raft import RaftTuning, Replica, ReplicaConfig
from hacontrol.raft.keys import generate_secret
from tests.integration.harness import free_ports
from tests.integration.raft_helpers.kv_node import KvMachine


@contextmanager
def kv_replicas(data_dir: Path, tuning: RaftTuning | None = None,
                count: int = 3) -> Iterator[list[Replica]]:
    """`count` replicas of one cluster, destroyed on the way out whatever happened."""
    addrs = [f"127.0.0.1:{p}" for p in free_ports(count)]
    secret = generate_secret()
    made: list[Replica] = []
    extra: dict[str, Any] = {} if tuning is None else {"tuning": tuning}
    try:
        for i, addr in enumerate(addrs):
            config = ReplicaConfig(node_id=f"n{i}", raft_addr=addr,
                                   peers=[a for a in addrs if a != addr],
                                   data_dir=data_dir / f"n{i}", secret=secret, **extra)
            made.append(Replica(config, KvMachine()))
        yield made
    finally:
        for r in made:
            r.destroy()


def leader(among: list[Replica], min_term: int = 0) -> Replica | None:
    """The replica that believes it leads in a term past `min_term`, if any."""
    for r in among:
        st = r.status()
        if st.role == "leader" and st.term > min_term:
            return r
    return None


def kv_set(key: str, value: int) -> bytes:
    return msgpack.packb({"op": "set", "k": key, "v": value})


def kv_value(r: Replica, key: str) -> Any:
    return r.read(lambda m: m.data.get(key))  # type: ignore[attr-defined]
