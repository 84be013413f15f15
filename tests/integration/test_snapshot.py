"""Backups of real clusters: `hacontrol operator snapshot save|inspect|restore`.

A cluster holding 1,000 jobs is saved and restored onto a fresh cluster of other replica
ids and addresses; a damaged file is refused; a restore onto a running cluster is one log
entry its agent reconciles to (what the restored state does not know is stopped, what it
holds and the node lacks is started).
"""

from __future__ import annotations

import io
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

from hacontrol.cli.main import main

from .harness import Cluster, http, pid_alive, wait_for
from .test_agent_e2e import job, processes_with, running

JOBS = 1000
SPEC = {"command": ["sleep", "600"], "count": 1, "resources": {"cpu": 0.01, "memory_mb": 4}}


def cli(c: Cluster, token: str, *argv: str) -> tuple[int, str]:
    """Run the CLI in this process against `c`; (exit code, stdout and stderr)."""
    out = io.StringIO()
    with redirect_stdout(out), redirect_stderr(out):
        code = main([*argv, "--addr", ",".join(r.api for r in c.replicas), "--token", token])
    return code, out.getvalue()


def view(c: Cluster, token: str, replica: Any) -> dict[str, Any]:
    """Namespaces with quotas, every job as the API shows it, and some jobs' versions."""
    def get(path: str) -> Any:
        resp = http("GET", f"{replica.api}{path}", token=token, timeout=30)
        assert resp.status == 200, (path, resp)
        return resp.body
    jobs = get("/v1/jobs")["jobs"]
    return {"namespaces": {n["name"]: n["quota"] for n in get("/v1/namespaces")["namespaces"]},
            "jobs": {(j["namespace"], j["name"]): {k: v for k, v in j.items()
                                                   if k not in ("status", "counts")}
                     for j in jobs},
            "versions": {name: [v["version"] for v in get(f"/v1/jobs/{ns}/{name}/versions")
                                ["versions"]]
                         for ns, name in (("team", "job1"), ("default", "job2"),
                                          ("team", "job3"))}}


def test_save_1000_jobs_and_restore_onto_a_fresh_cluster(tmp_path: Path) -> None:
    source = Cluster(tmp_path / "source")
    target = Cluster(tmp_path / "target", id_prefix="r")
    try:
        source.start()
        assert source.write("PUT", "/v1/namespaces/team",
                            {"quota": {"cpu": 100, "memory_mb": 100_000}}).status == 200

        def put(i: int) -> None:
            ns = "team" if i % 2 else "default"
            # One job in ten with an allocation: with no node to place them on, every
            # pending allocation is looked at again by each placement round.
            spec = {**SPEC, "env": {"I": str(i)}, "count": 1 if i % 10 == 0 else 0}
            assert source.write("PUT", f"/v1/jobs/{ns}/job{i}", spec).status == 200
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(JOBS)))
        for i, versions in ((1, 3), (2, 2), (3, 2)):  # a few jobs with a history
            for v in range(2, versions + 1):
                ns = "team" if i % 2 else "default"
                assert source.write("PUT", f"/v1/jobs/{ns}/job{i}",
                                    {**SPEC, "env": {"I": str(i), "V": str(v)},
                                     "count": 0}).status == 200
        path = tmp_path / "backup.snap"
        code, out = cli(source, source.token, "operator", "snapshot", "save", str(path))
        assert code == 0, out
        expected = view(source, source.token, source.leader())
        assert len(expected["jobs"]) == JOBS and expected["versions"]["job1"] == [3, 2, 1]
        code, out = cli(source, source.token, "operator", "snapshot", "inspect", str(path))
        assert code == 0 and f"{JOBS}" in out, out

        # A damaged file is refused by inspect and restore, and never reaches the log.
        data = path.read_bytes()
        for name, bad in (("flipped", data[:999] + bytes([data[999] ^ 1]) + data[1000:]),
                          ("truncated", data[:len(data) - 100])):
            damaged = tmp_path / f"{name}.snap"
            damaged.write_bytes(bad)
            for command in ("inspect", "restore"):
                code, out = cli(source, source.token, "operator", "snapshot", command,
                                str(damaged))
                assert code == 1 and "nothing was done" in out, out
            resp = http("PUT", f"{source.replicas[0].api}/v1/operator/snapshot", bad,
                        token=source.token, headers={"Content-Type": "application/octet-stream"})
            assert resp.status == 422 and resp.body["error"]["field"] == "snapshot", resp
        for replica in source.replicas:  # done with it (a clean stop takes seconds)
            replica.proc.kill9()

        # A fresh cluster elsewhere: other ids, other ports, its own bootstrap token.
        target.start()
        assert {r.id for r in target.replicas}.isdisjoint(r.id for r in source.replicas)
        code, out = cli(target, target.token, "operator", "snapshot", "restore", str(path))
        assert code == 0, out
        for replica in target.replicas:  # the same state on every replica
            assert view(target, source.token, replica) == expected
        # The tokens came with the state: the target's own bootstrap token is gone.
        assert target.api("GET", "/v1/jobs").status == 403
    finally:
        source.stop()
        target.stop()


def test_restore_onto_a_running_cluster_reconciles_its_agent(cluster: Cluster,
                                                             tmp_path: Path) -> None:
    markers = {name: uuid.uuid4().hex for name in ("stay", "back", "stray")}
    cluster.start_agent("n1")
    for name in ("stay", "back"):
        assert cluster.write("PUT", f"/v1/jobs/default/{name}", job(markers[name])).status == 200
    (stay,) = wait_for(lambda: running(cluster, "stay", 1), 20, what="stay running")
    wait_for(lambda: running(cluster, "back", 1), 20, what="back running")
    path = tmp_path / "backup.snap"
    code, out = cli(cluster, cluster.token, "operator", "snapshot", "save", str(path))
    assert code == 0, out

    # After the save: one job goes, another comes.
    assert cluster.write("DELETE", "/v1/jobs/default/back").status == 200
    wait_for(lambda: not processes_with(markers["back"]), 20, what="back stopped")
    assert cluster.write("PUT", "/v1/jobs/default/stray", job(markers["stray"])).status == 200
    (stray,) = wait_for(lambda: running(cluster, "stray", 1), 20, what="stray running")

    code, out = cli(cluster, cluster.token, "operator", "snapshot", "restore", str(path))
    assert code == 0, out
    # The agent reconciles: the allocation the restored state does not know is stopped,
    # the one it holds and the node lacks is started, the one both know is left alone.
    wait_for(lambda: not pid_alive(stray["pid"]), 20, what="stray's process stopped")
    wait_for(lambda: not processes_with(markers["stray"]), 20, what="no stray process")
    wait_for(lambda: len(processes_with(markers["back"])) == 1, 20, what="back started again")
    wait_for(lambda: running(cluster, "back", 1), 20, what="back running again")
    assert cluster.api("GET", "/v1/jobs/default/stray").status == 404
    assert [a["pid"] for a in running(cluster, "stay", 1) or []] == [stay["pid"]]
    assert len(processes_with(markers["stay"])) == 1
