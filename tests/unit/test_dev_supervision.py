"""`hacontrol dev`'s restart decisions, on plain data (no processes are started)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hacontrol.cli.devsupervise import (
    FIRST_DELAY_S,
    MAX_DELAY_S,
    STABLE_S,
    Child,
    Supervision,
    restart_delay,
)


def test_restart_delay_doubles_up_to_its_cap() -> None:
    delays = [restart_delay(n) for n in range(1, 12)]
    assert delays[:3] == [FIRST_DELAY_S, 2 * FIRST_DELAY_S, 4 * FIRST_DELAY_S]
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY_S


def dead_child(tmp_path: Path, code: int) -> Child:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    return Child("c1", "server", [], tmp_path / "c1.log", proc=proc)


def test_a_death_is_reported_once_and_restarted_after_the_backoff(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervision(lines.append, restart=True)
    sup.enable()
    child = dead_child(tmp_path, 3)
    child.started_at = 100.0
    assert sup.check([child], 101.0) == [child]
    assert sup.check([child], 101.1) == []  # once
    assert "exited with code 3; restarting in 0.5s" in lines[0]
    assert sup.due([child], 101.4) == []
    assert sup.due([child], 101.5) == [child] and child.restarts == 1
    # Dying again soon after its start doubles the wait; after a stable run it starts over.
    child.reported_exit, child.started_at = False, 102.0
    sup.check([child], 103.0)
    assert child.restart_at == 103.0 + 2 * FIRST_DELAY_S
    child.reported_exit, child.started_at = False, 110.0
    sup.check([child], 110.0 + STABLE_S + 1)
    assert child.failures == 1


def test_no_restart_reports_and_leaves_it_down(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervision(lines.append, restart=False)
    sup.enable()
    child = dead_child(tmp_path, 1)
    assert sup.check([child], 5.0) == [child]
    assert "left down (--no-restart)" in lines[0]
    assert child.restart_at is None and sup.due([child], 1e9) == []


def test_no_restart_before_the_cluster_first_came_up(tmp_path: Path) -> None:
    sup = Supervision(lambda _: None, restart=True)
    child = dead_child(tmp_path, 1)
    sup.check([child], 5.0)
    assert child.restart_at is None
