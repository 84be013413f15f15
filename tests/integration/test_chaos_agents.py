"""The chaos suite's agents mode: real agents, real job processes, checkers that can fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaos.checker.agents import never_oversubscribed, no_duplicate_instances, process_counts
from chaos.cluster.local import LocalBackend
from chaos.history import History
from chaos.nemesis import UnsupportedNemesis, check_supported, make_schedule
from chaos.runner import RunConfig, run


def _history(polls: list[dict[str, Any]] | None = None,
             os_processes: dict[str, Any] | None = None) -> History:
    h = History(seed=1, nemesis="kill-agent", backend="local", meta={"mode": "agents"})
    h.polls = polls or []
    if os_processes is not None:
        h.final["os_processes"] = os_processes
    return h


def _poll(t: float, allocs: list[list[Any]]) -> dict[str, Any]:
    return {"t": t, "kind": "placement", "replica": "c1",
            "nodes": {"n1": {"cpu": 1.0, "memory_mb": 256, "status": "ready"},
                      "n2": {"cpu": 1.0, "memory_mb": 256, "status": "ready"}},
            "allocs": allocs}


def test_an_oversubscribed_state_is_caught() -> None:
    fits = _poll(1.0, [["a1", "chaos/svc0", "n1", "running", 0.5, 128],
                       ["a2", "chaos/svc0", "n1", "pending", 0.5, 128],
                       # terminal: gave its share back, whatever it says
                       ["a3", "chaos/svc0", "n1", "lost", 0.5, 128],
                       ["a4", "chaos/svc1", "n2", "exited", 1.0, 64]])
    assert never_oversubscribed(_history([fits])).valid
    over = _poll(2.0, [["a1", "chaos/svc0", "n1", "running", 0.5, 128],
                       ["a2", "chaos/svc0", "n1", "starting", 0.5, 128],
                       ["a5", "chaos/svc1", "n1", "paused", 0.25, 16]])
    v = never_oversubscribed(_history([fits, over]))
    assert not v.valid
    assert v.details[0]["node"] == "n1" and v.details[0]["t"] == 2.0
    assert v.details[0]["cpu"] == pytest.approx(1.25)
    # Memory alone is enough.
    mem = _poll(3.0, [["a6", "chaos/svc1", "n2", "exited", 0.1, 300]])
    assert not never_oversubscribed(_history([mem])).valid
    # No observation at all is not a pass.
    assert not never_oversubscribed(_history([])).valid


def _sample(t: float, by_job: dict[str, int],
            duplicates: dict[str, list[int]] | None = None) -> dict[str, Any]:
    return {"t": t, "by_job": by_job, "by_node": {}, "duplicates": duplicates or {},
            "allocs": []}


def test_a_missing_process_is_caught() -> None:
    expected = {"svc0": 2, "svc1": 1}
    short = {"healed_at": 10.0, "bound_s": 5.0, "expected": expected, "settled_at": None,
             "samples": [_sample(10.5 + i / 2, {"svc0": 1, "svc1": 1}) for i in range(10)]}
    v = process_counts(_history(os_processes=short), 5.0)
    assert not v.valid
    assert v.details[0]["mismatch"] == {"svc0": {"expected": 2, "running": 1}}
    ok = {**short, "settled_at": 12.5,
          "samples": [_sample(12.5, {"svc0": 2, "svc1": 1})]}
    v = process_counts(_history(os_processes=ok), 5.0)
    assert v.valid and "2.5s after the final heal" in v.summary
    # Settled, but later than the bound allows.
    assert not process_counts(_history(os_processes=ok), 2.0).valid
    assert not process_counts(_history(), 5.0).valid


def test_a_duplicate_instance_is_caught() -> None:
    rec = {"healed_at": 0.0, "bound_s": 5.0, "expected": {"svc0": 1}, "settled_at": 1.0,
           "samples": [_sample(0.5, {"svc0": 2}, {"svc0-000003": [101, 102]}),
                       _sample(1.0, {"svc0": 1})]}
    v = no_duplicate_instances(_history(os_processes=rec))
    assert not v.valid and v.details[0]["alloc"] == "svc0-000003"
    rec["samples"] = rec["samples"][1:]
    assert no_duplicate_instances(_history(os_processes=rec)).valid


def test_agent_nemeses_need_agents_and_partition_needs_a_network() -> None:
    with pytest.raises(UnsupportedNemesis, match="agents mode"):
        check_supported("kill-agent", "local", LocalBackend.capabilities, agents=0)
    with pytest.raises(UnsupportedNemesis, match="partition.*local backend"):
        check_supported("partition-agent", "local", LocalBackend.capabilities, agents=2)
    with pytest.raises(UnsupportedNemesis, match="job processes"):
        check_supported("crash-storm", "local", LocalBackend.capabilities, agents=2,
                        has_crash=False)
    check_supported("node-loss", "local", LocalBackend.capabilities, agents=2)
    members = ["c1", "c2", "c3", "n1", "n2"]
    for w in make_schedule("node-loss", 1, 60, members):
        assert w.end_s - w.start_s >= 10 and w.targets[0] in ("n1", "n2")
    groups = make_schedule("partition-agent", 1, 60, members)[0].groups
    assert len(groups) == 2 and groups[1] == ["c1", "c2", "c3"]
    # A mixed schedule without agents never draws an agent nemesis.
    assert not {w.nemesis for w in make_schedule("mixed", 1, 600, ["c1", "c2", "c3"])} & {
        "kill-agent", "partition-agent", "crash-storm", "node-loss"}


def test_kill_agent_in_agents_mode(tmp_path: Path) -> None:
    cfg = RunConfig(nemesis="kill-agent", time_s=12.0, seed=31, backend="local",
                    mode="agents", results_dir=tmp_path / "results", convergence_bound_s=30.0)
    summary, out = run(cfg)
    report = json.loads((out / "report.json").read_text())
    assert report["faults"] >= 1
    assert {"process_counts", "oversubscription", "duplicates"} <= set(report["checkers"])
    assert report["valid"], json.dumps(report["checkers"], indent=1)[:3000]
    h = History.load(out / "history.jsonl")
    assert h.meta["mode"] == "agents" and h.meta["agents"] == 2
    assert any(f.get("targets") and f["targets"][0] in ("n1", "n2") for f in h.faults
               if f.get("fault") == "kill-agent")
    # Every job process of the run is gone after it.
    from chaos.agents import run_processes
    assert run_processes(h.meta["run_marker"]) == []


def test_a_node_marked_down_without_an_agent_fault_is_caught() -> None:
    from chaos.checker.agents import nodes_stayed_up
    up = _poll(1.0, [["a1", "chaos/burst", "n1", "running", 0.001, 16]])
    assert nodes_stayed_up(_history([up])).valid
    down = _poll(2.0, [["a1", "chaos/burst", "n1", "lost", 0.001, 16]])
    down["nodes"]["n1"]["status"] = "down"
    v = nodes_stayed_up(_history([up, down]))
    assert not v.valid and {d.get("node") for d in v.details} == {"n1"}
    assert any(d.get("alloc") == "a1" for d in v.details)
    # A lost allocation alone (the poll missed the node's down spell) is enough.
    lost = _poll(3.0, [["a2", "chaos/burst", "n2", "lost", 0.001, 16]])
    assert not nodes_stayed_up(_history([up, lost])).valid
    # A run that killed an agent may see its node down.
    h = _history([up, down])
    h.faults = [{"t": 1.5, "fault": "kill-agent", "phase": "start", "targets": ["n1"]}]
    assert nodes_stayed_up(h).valid
    assert not nodes_stayed_up(_history([])).valid


def test_overload_needs_agents_a_burst_job_and_stays_out_of_mixed() -> None:
    with pytest.raises(UnsupportedNemesis, match="agents mode"):
        check_supported("overload", "local", LocalBackend.capabilities, agents=0)
    with pytest.raises(UnsupportedNemesis, match="burst job"):
        check_supported("overload", "local", LocalBackend.capabilities, agents=2,
                        has_overload=False)
    windows = make_schedule("overload", 1, 60, ["c1", "c2", "c3", "n1", "n2"])
    assert windows and all(w.kind == "overload" and w.targets == ["@leader"]
                           and (w.size or 0) in (200, 400, 600) for w in windows)
    assert "overload" not in {w.nemesis for w in make_schedule(
        "mixed", 1, 600, ["c1", "c2", "c3", "n1", "n2"])}
