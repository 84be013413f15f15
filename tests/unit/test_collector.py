"""The replica's garbage-collector policy (raft/collector.py), on the real collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hacontrol.raft.collector import LEADER_FACTOR, Collector, sweep_due


class Cyclic:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    c.install()
    yield c
    c.uninstall()
    gc.unfreeze()


def abandoned_cycle_after_a_full_collection() -> weakref.ref[Cyclic]:
    obj = Cyclic()
    ref = weakref.ref(obj)
    gc.collect()  # obj survives a full collection...
    del obj  # ...then becomes cyclic garbage
    return ref


def test_a_full_collection_freezes_its_survivors(collector: Collector) -> None:
    keep = [Cyclic() for _ in range(1000)]
    before = collector.full_collections
    gc.collect()
    assert collector.full_collections == before + 1
    assert gc.get_freeze_count() >= len(keep)
    # Frozen, the oldest generation is empty: the next full collection walks nothing old.
    assert not any(o in gc.get_objects(generation=2) for o in keep[:5])


def test_a_middle_collection_freezes_its_survivors_too(collector: Collector) -> None:
    keep = [Cyclic() for _ in range(1000)]
    before = collector.full_collections
    gc.collect(1)
    assert collector.full_collections == before, "not a full collection"
    assert gc.get_freeze_count() >= len(keep)
    assert not any(o in gc.get_objects(generation=2) for o in keep[:5])
    # a young collection freezes nothing: what it keeps moves on to the middle generation
    frozen = gc.get_freeze_count()
    young = [Cyclic() for _ in range(100)]
    gc.collect(0)
    assert gc.get_freeze_count() == frozen and young[0] in gc.get_objects(generation=1)


def test_without_the_collector_a_cycle_is_collected() -> None:
    ref = abandoned_cycle_after_a_full_collection()
    gc.collect()
    assert ref() is None


def test_a_frozen_cycle_waits_for_the_sweep(collector: Collector) -> None:
    ref = abandoned_cycle_after_a_full_collection()
    gc.collect()
    assert ref() is not None  # the price of freezing: a frozen cycle is not collected
    done = collector.sweep()
    assert ref() is None
    assert done.collected >= 1
    assert done.frozen_before > 0
    assert done.seconds >= 0


def test_the_sweep_freezes_what_survives_it(collector: Collector) -> None:
    keep = [Cyclic() for _ in range(100)]
    done = collector.sweep()
    assert done.frozen_after >= len(keep)
    assert gc.get_freeze_count() == done.frozen_after
    # The sweep's own full collection is not counted as one the policy froze after.
    assert collector.full_collections == 0


def test_refcounting_still_frees_frozen_acyclic_objects(collector: Collector) -> None:
    class Plain:
        pass
    obj = Plain()
    ref = weakref.ref(obj)
    gc.collect()
    assert ref() is not None
    del obj
    assert ref() is None


@pytest.mark.parametrize("elapsed,leading,due", [
    (3599.0, False, False),
    (3600.0, False, True),
    (3600.0, True, False),
    (3600.0 * LEADER_FACTOR - 1, True, False),
    (3600.0 * LEADER_FACTOR, True, True),
])
def test_when_a_sweep_is_due(elapsed: float, leading: bool, due: bool) -> None:
    assert sweep_due(1000.0 + elapsed, 1000.0, leading, every_s=3600.0) is due


def test_the_metrics_show_what_is_frozen_and_what_sweeps_found(collector: Collector) -> None:
    from prometheus_client import generate_latest

    from hacontrol.observe.metrics import ServerMetrics

    def figures() -> dict[str, float]:
        text = generate_latest(metrics.registry).decode()
        return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
                if line.startswith("hacontrol_gc_")}
    metrics = ServerMetrics()
    metrics.watch_gc(collector)
    ref = abandoned_cycle_after_a_full_collection()
    gc.collect()
    before = figures()
    assert before["hacontrol_gc_frozen_objects"] == gc.get_freeze_count() > 0
    assert before["hacontrol_gc_full_collections_total"] == collector.full_collections >= 1
    assert before["hacontrol_gc_sweeps_total"] == 0
    collector.sweep()
    assert ref() is None
    after = figures()
    assert after["hacontrol_gc_sweeps_total"] == 1
    assert after["hacontrol_gc_sweep_unreachable_total"] >= 1
