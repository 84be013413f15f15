"""Short pauses of Python's cyclic garbage collector, for Raft's sake.

A full collection walks every container object in the process with the GIL held, and
nothing else in the process runs meanwhile: not the Raft tick thread, so a leader sends no
heartbeats and a follower acknowledges nothing. CPython starts one whenever the objects
that survived into the oldest generation since the last one exceed a quarter of those
already there, so a replica whose state churns (every apply replaces records) collects in
full every few seconds, each time over its whole heap.

Measured at the issue's scale (5,000 simulated nodes registering, 3 replicas on 2 cores):
full collections every 5-12 s on every replica, each holding the GIL 0.3-2.2 s of wall
time (150,000-250,000 containers survived them, when the state held only the nodes);
a leader's took longer than an election timeout. Built in one process, the state of
100,000 allocations on 5,000 nodes alone is 243,000 containers, and a full collection over
it took 228 ms on a quiet machine, as long as the shortest election timeout
(`python bench/gc_pause.py`). With the policy below, at 1,000 simulated nodes
(`bench/scheduler.py --scale --quick`, 3 runs each, alternated): elections while 20,000
instances were placed 1, 1, 2 before, 0, 0, 0 after; API read p99 during the soak
184-307 ms before, 184-213 ms after.

So the survivors of each full collection are frozen (`gc.freeze`): later collections
never walk them again, and a full collection costs what was allocated since the last.
The survivors of each middle-generation collection are frozen too. Without that, a
leader's oldest generation filled, between two full collections, with the sync requests
its nodes hold open (about 75 objects each; 1,000-2,000 in flight at 5,000 nodes), and each
full collection walked them again: 30-140 ms every 3-5 s, which was the whole tail of the
API's read latency in `bench/scheduler.py --scale`'s soak (p99 113-126 ms in three runs;
72.8 ms with this, the full collections then finding nothing to walk). Sweeping the
leader after 2 minutes of that soak found 0 unreachable frozen objects (25 after the
placement of 100,000 allocations).
Frozen objects are still freed by their reference counts, which is how a replaced record
or a finished request is freed, cycle-free. What freezing gives up is
a cycle among frozen objects that becomes garbage later (a connection's objects that
lived through a collection, say): `sweep` collects those, unfrozen, in one full walk, at a
time `sweep_due` picks: hourly on a follower (whose pause costs nothing: its tick reads
its sockets before it would campaign, `election_grace.py`), only every `LEADER_FACTOR`
hours on a leader, so that a long leadership still frees what it leaked.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MIDDLE = 1
OLDEST = 2
# How often a replica sweeps the frozen objects, and how much longer a leader waits:
# a sweep walks the whole heap once (228 ms at 100,000 allocations on a quiet machine).
SWEEP_S = 3600.0
LEADER_FACTOR = 6
# Spread over replicas, so that two followers rarely pause at once (a leader that hears
# from no majority for its fallback timeout steps down).
JITTER = 0.25


@dataclass(frozen=True)
class Sweep:
    collected: int  # unreachable objects found among the frozen and the rest
    frozen_before: int
    frozen_after: int
    seconds: float


def sweep_due(now: float, last: float, leading: bool, every_s: float = SWEEP_S) -> bool:
    """Whether to sweep now, `last` being when this replica last swept (or started)."""
    return now - last >= (every_s * LEADER_FACTOR if leading else every_s)


class Collector:
    """Freezes the survivors of every middle and full collection while installed
    (process-wide: one per process, installed by the server)."""

    def __init__(self) -> None:
        self.full_collections = 0
        self.sweeps = 0
        self.swept_unreachable = 0  # what the sweeps found: cycles freezing kept alive
        self._sweeping = False

    def install(self) -> None:
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] >= MIDDLE and not self._sweeping:
            if info["generation"] == OLDEST:
                self.full_collections += 1
            gc.freeze()

    def sweep(self) -> Sweep:
        """Collect everything, the frozen included, then freeze the survivors again."""
        before = gc.get_freeze_count()
        started = time.perf_counter()
        self._sweeping = True
        try:
            gc.unfreeze()
            collected = gc.collect()
        finally:
            self._sweeping = False
            gc.freeze()
        self.sweeps += 1
        self.swept_unreachable += collected
        return Sweep(collected, before, gc.get_freeze_count(), time.perf_counter() - started)


async def sweep_now_and_then(collector: Collector, leading: Callable[[], bool],
                             every_s: float = SWEEP_S,
                             clock: Callable[[], float] = time.monotonic) -> None:
    """Event loop: sweep when `sweep_due` says so (checked a few times per period)."""
    last = clock()
    while True:
        await asyncio.sleep(every_s / 8 * random.uniform(1 - JITTER, 1 + JITTER))
        if not sweep_due(clock(), last, leading(), every_s):
            continue
        done = collector.sweep()
        last = clock()
        log.info("garbage collector: swept %d frozen objects in %.3f s, %d unreachable "
                 "freed, %d frozen now", done.frozen_before, done.seconds, done.collected,
                 done.frozen_after)
