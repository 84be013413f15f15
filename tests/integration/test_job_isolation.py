"""What a job can reach on its node: none of the agent's credentials, and not root unless
its token may run as root. A real agent as root, jobs that try, on a cluster with TLS."""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Cluster, http, wait_for

RESOURCES = {"cpu": 0.1, "memory_mb": 32}


@pytest.fixture
def open_cluster() -> Iterator[Cluster]:
    """A TLS cluster whose root every user may traverse (0711), unlike pytest's temporary
    directories: only the modes of the agent's own files and directories stand between a
    job and the secrets, so the test fails if any of them is readable."""
    if os.geteuid() != 0:
        pytest.skip("an agent that is not root runs every job as itself")
    base = Path(tempfile.mkdtemp(prefix="hacontrol-isolation-"))
    base.chmod(0o711)
    c = Cluster(base / "cluster", tls=True)
    c.root.chmod(0o711)
    (c.root / "tls").chmod(0o711)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(base, ignore_errors=True)


def credential_files(c: Cluster, agent: str) -> list[Path]:
    data = c.root / agent
    tls = c.root / "tls"
    return [data / "node-credential", data / "controller-credential.sha256",
            c.root / "token", tls / "agent-key.pem", tls / "server-key.pem",
            tls / "ca-key.pem", tls / "cli-key.pem"]


def thief(paths: list[Path]) -> list[str]:
    """A job that tries to read every path and prints what it got."""
    script = "".join(
        f'if out=$(cat "{p}" 2>&1); then echo "READ {p}: $out"; '
        f'else echo "DENIED {p}: $out"; fi; ' for p in paths)
    return ["sh", "-c", script + "echo thief-done; exec sleep 600"]


def logs(c: Cluster, job: str) -> str:
    allocs = c.api("GET", f"/v1/allocations?job={job}").body["allocations"]
    running = [a for a in allocs if a["state"] == "running"]
    if not running:
        return ""
    req = urllib.request.Request(
        f"{c.replicas[0].api}/v1/allocations/{running[0]['id']}/logs?tail=100",
        headers={"Authorization": f"Bearer {c.token}"})
    with urllib.request.urlopen(req, timeout=5, context=c.client_tls) as resp:
        text: str = resp.read().decode()
    return text


def report(c: Cluster, job: str) -> str | None:
    text = logs(c, job)
    return text if "thief-done" in text else None


def test_a_job_cannot_read_the_agents_credentials(open_cluster: Cluster) -> None:
    c = open_cluster
    c.start_agent("n1", default_user=None)  # the agent's own default user: nobody
    paths = credential_files(c, "n1")
    wait_for(lambda: all(p.exists() for p in paths), 30, what="the agent's credentials")
    secrets = [p.read_text().strip() for p in paths]

    spec = {"command": thief(paths), "count": 1, "resources": RESOURCES}
    assert c.write("PUT", "/v1/jobs/default/thief", spec).status == 200
    out = wait_for(lambda: report(c, "thief"), 30, what="the job's report")
    for p in paths:
        assert f"DENIED {p}:" in out, out
        assert f"READ {p}:" not in out, out
    assert "Permission denied" in out
    assert not [s for s in secrets if s in out], "a secret reached the job's log"

    # The same job as root reads every file: the paths are the real ones, and the test
    # above can fail.
    root = {**spec, "user": "root"}
    assert c.write("PUT", "/v1/jobs/default/rootthief", root).status == 200
    out = wait_for(lambda: report(c, "rootthief"), 30, what="the root job's report")
    for p in paths:
        assert f"READ {p}:" in out, out


def test_user_root_needs_the_run_as_root_capability(open_cluster: Cluster) -> None:
    c = open_cluster
    lead = c.leader()

    def client_token(name: str, rule: dict[str, object]) -> str:
        assert c.write("PUT", f"/v1/acl/policies/{name}",
                       {"rules": {"namespaces": {"*": rule}}}).status == 200
        resp = c.write("POST", "/v1/acl/tokens", {"name": name, "policies": [name]})
        assert resp.status == 200, resp
        secret: str = resp.body["token"]["secret_id"]
        return secret

    def put(token: str, job: str) -> int:
        spec = {"command": ["sleep", "600"], "count": 1, "resources": RESOURCES,
                "user": "root"}
        status: int = http("PUT", f"{lead.api}/v1/jobs/default/{job}", spec, token=token,
                           context=c.client_tls).status
        return status

    writer = client_token("writer", {"policy": "write"})
    assert put(writer, "r1") == 403
    assert c.api("GET", "/v1/jobs/default/r1").status == 404
    rooter = client_token("rooter", {"policy": "write", "capabilities": ["run-as-root"]})
    assert put(rooter, "r2") == 200
