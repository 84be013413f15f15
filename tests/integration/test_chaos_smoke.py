"""A short chaos run inside `make test`: real faults, real histories, checkers that can fail.

The standard set (`make chaos`) runs every nemesis for longer; this one keeps the default
test run honest: one crash nemesis on plain processes, one partition nemesis in network
namespaces, a replica joining under kills (the membership nemesis, one window: ~20 s), and a
planted bug that the checkers must catch.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaos.runner import RunConfig, run

from .harness import require_netns


def _run(tmp_path: Path, **kw: object) -> dict:
    cfg = RunConfig(results_dir=tmp_path / "results", convergence_bound_s=20.0, **kw)
    summary, out = run(cfg)
    report = json.loads((out / "report.json").read_text())
    assert report["valid"] == summary["valid"]
    assert (out / "history.jsonl").exists() and (out / "report.md").exists()
    return report


def test_kill_leader_on_processes(tmp_path: Path) -> None:
    report = _run(tmp_path, nemesis="kill-leader", time_s=15.0, seed=11, backend="local")
    assert report["faults"] >= 1
    assert report["operations"] > 100
    assert report["valid"], json.dumps(report["checkers"], indent=1)[:3000]


def test_partition_leader_in_namespaces(tmp_path: Path) -> None:
    require_netns()
    report = _run(tmp_path, nemesis="partition-leader", time_s=15.0, seed=12, backend="netns")
    assert report["faults"] >= 1
    assert report["valid"], json.dumps(report["checkers"], indent=1)[:3000]


def test_planted_stale_read_is_caught(tmp_path: Path) -> None:
    report = _run(tmp_path, nemesis="pause", time_s=12.0, seed=13, backend="local",
                  plant="stale-read")
    assert report["valid"] is False
    assert report["checkers"]["linearizable"]["valid"] is False


def test_membership_changes_on_processes(tmp_path: Path) -> None:
    """A replica joins (and, given time, one is removed) under kills; histories stay valid."""
    report = _run(tmp_path, nemesis="membership", time_s=12.0, seed=14, backend="local")
    assert report["membership"]["joins"] >= 1, report["membership"]
    assert report["checkers"]["membership"]["valid"]
    assert report["valid"], json.dumps(report["checkers"], indent=1)[:3000]
