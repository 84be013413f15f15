"""The leader's per-node sums of its allocations' reported use, kept between listings."""

from __future__ import annotations

from hacontrol.scheduler.leader_state import LeaderState

MB = 1024 * 1024


def test_the_sum_follows_each_change_of_reports_and_of_allocations() -> None:
    ls = LeaderState(term=1, since=0.0)
    ids = ["a", "b"]
    assert ls.measured("n1", ids) == {"cpu": 0.0, "memory_mb": 0, "reporting": 0}
    ls.alloc_metrics["a"] = {"cpu_percent": 50.0, "rss_bytes": 3 * MB}
    ls.metrics_changed("n1")
    assert ls.measured("n1", ids) == {"cpu": 0.5, "memory_mb": 3, "reporting": 1}
    ls.alloc_metrics["b"] = {"cpu_percent": 25.0, "rss_bytes": 1 * MB}
    ls.metrics_changed("n1")
    assert ls.measured("n1", ids) == {"cpu": 0.75, "memory_mb": 4, "reporting": 2}
    # another list of allocations (the state changed): summed again, same reports
    assert ls.measured("n1", ["b"]) == {"cpu": 0.25, "memory_mb": 1, "reporting": 1}
    # another node's change leaves this node's sum as it is
    only_b = ["b"]
    kept = ls.measured("n1", only_b)
    ls.metrics_changed("n2")
    assert ls.measured("n1", only_b) is kept, "unchanged: the same answer, not summed again"
    assert ls.measured("n1", list(only_b)) is kept, "an equal list of allocations: the same"
    ls.alloc_metrics["b"] = {"cpu_percent": 100.0, "rss_bytes": 2 * MB}
    ls.metrics_changed("n1")
    assert ls.measured("n1", only_b) == {"cpu": 1.0, "memory_mb": 2, "reporting": 1}
