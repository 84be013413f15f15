"""`hacontrol operator config show|apply` against a real cluster: a weight changed from the
CLI changes the health score at once, on every replica."""

from __future__ import annotations

import json
from pathlib import Path

from .harness import Cluster, wait_for
from .test_membership import cli


def test_a_weight_applied_from_the_cli_changes_the_score(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    shown = cli(cluster, "operator", "config", "show")
    assert shown.returncode == 0, shown
    assert "never set" in shown.stdout and "health.node_down" in shown.stdout
    before = json.loads(cli(cluster, "operator", "config", "show", "--json").stdout)
    assert before["set"] is False

    # A new command type needs every voter's version known: a replica killed before any
    # peer heard it counts as the oldest version, and the write is refused (rightly).
    def versions_known() -> bool:
        for r in cluster.replicas:
            seen = cluster.api("GET", "/v1/status", replica=r).body.get("member_protocols")
            if not seen or any(v is None for v in seen.values()):
                return False
        return True
    wait_for(versions_known, 30, interval=0.1, what="every replica's protocol known to all")

    # Kill one replica: "replica down" costs `replica_down` points, here made 33.
    victim = cluster.replicas[2]
    victim.proc.kill9()
    path = tmp_path / "config.yaml"
    path.write_text("health:\n  replica_down: 33\n  no_quorum_margin: 0\n")
    applied = cli(cluster, "operator", "config", "apply", str(path))
    assert applied.returncode == 0, applied
    assert "Cluster config applied" in applied.stdout

    def penalty() -> float | None:
        body = cluster.api("GET", "/v1/health/score").body
        return next((r["penalty"] for r in body.get("reasons", [])
                     if r["reason"] == "replica_down"), None)
    assert wait_for(penalty, 15, what="the replica_down reason") == 33
    after = json.loads(cli(cluster, "operator", "config", "show", "--json").stdout)
    assert after["set"] is True and after["config"]["health"]["replica_down"] == 33

    path.write_text("health:\n  replica_down: -1\n")
    refused = cli(cluster, "operator", "config", "apply", str(path))
    assert refused.returncode != 0 and "replica_down" in refused.stderr, refused
