"""List views are reused only while the state they were built from is the state now."""

from __future__ import annotations

from bench.gc_pause import Builder
from hacontrol.api.view_cache import cached
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine


class Machine(Builder):
    def register(self, name: str) -> None:
        self.do(C.NODE_REGISTER, name=name, cpu=4.0, memory_mb=2048,
                address=f"http://{name}:8200", labels={}, attributes={})


def names(m: StateMachine) -> list[str]:
    names.builds += 1  # type: ignore[attr-defined]
    return sorted(m.nodes)


names.builds = 0  # type: ignore[attr-defined]  # each test that counts resets it; any may run alone


def test_a_view_is_built_once_per_state() -> None:
    w = Machine()
    w.register("a")
    names.builds = 0  # type: ignore[attr-defined]
    assert cached("names", w.m, names) == ["a"]
    assert cached("names", w.m, names) == ["a"]
    assert names.builds == 1  # type: ignore[attr-defined]


def test_any_applied_entry_builds_it_again() -> None:
    w = Machine()
    w.register("a")
    names.builds = 0  # type: ignore[attr-defined]
    assert cached("names", w.m, names) == ["a"]
    w.register("b")
    assert cached("names", w.m, names) == ["a", "b"]
    # Even one that changes nothing this view shows.
    w.do(C.NS_PUT, name="team", quota={"cpu": 1.0})
    assert cached("names", w.m, names) == ["a", "b"]
    assert names.builds == 3  # type: ignore[attr-defined]


def test_a_restored_store_is_not_served_the_old_ones_view() -> None:
    w, other = Machine(), Machine()
    w.register("a")
    other.register("z")  # the same index, another state
    assert cached("names", w.m, names) == ["a"]
    w.m.restore(other.m.snapshot())
    assert cached("names", w.m, names) == ["z"]


def test_kinds_and_machines_are_kept_apart() -> None:
    w, other = Machine(), Machine()
    w.register("a")
    other.register("b")
    assert cached("names", w.m, names) == ["a"]
    assert cached("names", other.m, names) == ["b"]
    assert cached("count", w.m, lambda m: len(m.nodes)) == 1
    assert cached("names", w.m, names) == ["a"]
