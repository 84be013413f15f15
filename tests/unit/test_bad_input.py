"""Hostile input: each test names the bug it guards against and fails without the fix."""

from __future__ import annotations

import time

import pytest

from hacontrol.model.errors import Rejection
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.constraints import Constraint, constraint_error, satisfies
from hacontrol.scheduler.placement import NodeRoom


def _node(name: str) -> NodeRoom:
    return NodeRoom(name, 4.0, 4096, 4.0, 4096, labels={}, attributes={}, eligible=True,
                    allocations=())


# --- regexp constraints --------------------------------------------------------------


def test_a_backtracking_pattern_against_a_long_name_finishes_at_once() -> None:
    # With a backtracking engine this takes longer than the age of the universe.
    c = Constraint("node.name", "regexp", "^(a+)+$")
    started = time.monotonic()
    assert not satisfies(c, _node("a" * 100_000 + "!"))
    assert satisfies(c, _node("a" * 100_000))
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("pattern", [r"(a)\1", r"(?=a)x", r"(?<!a)b", "x" * 600])
def test_patterns_a_linear_engine_cannot_run_are_refused(pattern: str) -> None:
    assert constraint_error(Constraint("node.name", "regexp", pattern)) is not None
    with pytest.raises(Rejection) as exc:
        parse_job_spec({"command": ["true"], "constraints": [
            {"attribute": "node.name", "operator": "regexp", "value": pattern}]})
    assert exc.value.field == "constraints[0].value"
