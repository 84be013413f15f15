"""Draining a node: which allocations to move now, as a pure function."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnNode:
    id: str
    job: tuple[str, str]  # (namespace, name)
    max_parallel: int


def to_migrate(on_node: list[OnNode], in_flight: dict[tuple[str, str], int], now: float,
               deadline: float | None) -> list[str]:
    """Allocations to move off a draining node now.

    Per job at most `max_parallel` replacements are in flight (placed elsewhere but not yet
    running); past the deadline everything left goes at once.
    """
    if deadline is not None and now >= deadline:
        return [a.id for a in sorted(on_node, key=lambda a: a.id)]
    out: list[str] = []
    taken: dict[tuple[str, str], int] = {}
    for a in sorted(on_node, key=lambda a: a.id):
        busy = in_flight.get(a.job, 0) + taken.get(a.job, 0)
        if busy < a.max_parallel:
            out.append(a.id)
            taken[a.job] = taken.get(a.job, 0) + 1
    return out
