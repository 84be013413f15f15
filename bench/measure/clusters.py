"""hacontrol clusters for the benchmarks (real replicas and agents, from the test harness),
started and torn down one way wherever a benchmark needs one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from bench.measure.procs import descendants, kill_leftovers, log
from tests.integration.harness import Cluster


def ready_cluster(root: Path, **kw: Any) -> Cluster:
    """A started cluster with every replica ready and a leader; stopped again if it never
    gets there (a cluster that a previous load left unhealthy is not reused)."""
    c = Cluster(root, **kw)
    try:
        c.start(wait=False)
        c.wait_ready(timeout=60)
        c.leader(timeout=30)
    except BaseException:
        c.stop()
        raise
    return c


@contextmanager
def cluster_in(root: Path) -> Iterator[Cluster]:
    """A started cluster, stopped on the way out together with whatever its agents'
    allocations left running (collected by pid and start time before the agents stop)."""
    cluster = Cluster(root)
    children: list[psutil.Process] = []
    try:
        cluster.start()
        yield cluster
    finally:
        for a in cluster.agents.values():
            if a.alive():
                children += descendants(a.pid)
        cluster.stop()
        n = kill_leftovers(children)
        if n:
            log(f"killed {n} leftover agent children")
