"""Routes and the leader loop depend on small protocols, never on the Controller class
(cycles anywhere in the tree are `test_architecture.py`'s)."""

from __future__ import annotations

from .test_architecture import imports_of, modules


def test_routes_and_the_leader_loop_do_not_know_the_controller() -> None:
    known = modules()
    for name, path in known.items():
        if name.startswith(("hacontrol.api", "hacontrol.scheduler")):
            assert "hacontrol.controller.replica" not in imports_of(name, path, known), name
