"""`hacontrol dev --tls`: a CA and certificates under DATA/tls/, every link over TLS, and
the CLI talking to it with the CA from the environment."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

from .harness import http, wait_for
from .test_dev import port_base, stop_dev


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacontrol", *argv], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_cli_with_the_ca_runs_a_job_on_a_tls_dev_cluster(tmp_path: Path) -> None:
    data = tmp_path / "dev"
    api, raft, agent = port_base(3), port_base(3), port_base(1)
    log = open(tmp_path / "dev.out", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "dev", "--tls", "--data-dir", str(data),
         "--replicas", "3", "--agents", "1", "--api-port", str(api), "--raft-port", str(raft),
         "--agent-port", str(agent)], stdout=log, stderr=subprocess.STDOUT)
    state: dict = {}
    try:
        state = wait_for(lambda: json.loads((data / "dev.json").read_text()), 30,
                         what="dev.json")

        def banner() -> str | None:
            text = (tmp_path / "dev.out").read_text()
            return text if "cluster ready" in text else None
        text = wait_for(banner, 60, what="dev banner")
        assert "(3 replicas, 1 agent, leader c" in text
        assert f"HACONTROL_CACERT={data / 'tls' / 'ca.pem'}" in text
        for key in ("ca-key.pem", "server-key.pem", "agent-key.pem", "cli-key.pem"):
            assert stat.S_IMODE((data / "tls" / key).stat().st_mode) == 0o600
        assert all(r["api"].startswith("https://") for r in state["replicas"])

        url = f"https://127.0.0.1:{api + 1}"
        token = (data / "token").read_text().strip()
        base = {**os.environ, "HACONTROL_ADDR": url, "HACONTROL_TOKEN": token}
        tls = {"HACONTROL_CACERT": str(data / "tls" / "ca.pem"),
               "HACONTROL_CLIENT_CERT": str(data / "tls" / "cli.pem"),
               "HACONTROL_CLIENT_KEY": str(data / "tls" / "cli-key.pem")}
        # Without the CA the cluster's certificate is not trusted.
        out = cli(base, "node", "list")
        assert out.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in out.stderr
        env = {**base, **tls}
        job_file = tmp_path / "web.yaml"
        job_file.write_text("command: [sh, -c, 'echo hi-over-tls; exec sleep 600']\n"
                            "count: 1\nresources: {cpu: 0.1}\n")
        out = cli(env, "job", "run", str(job_file), "--name", "web")
        assert out.returncode == 0, out.stderr

        def running() -> str | None:
            r = cli(env, "alloc", "list", "--json")
            allocs = json.loads(r.stdout)["allocations"] if r.returncode == 0 else []
            ids = [a["id"] for a in allocs if a["state"] == "running"]
            return ids[0] if ids else None
        alloc_id = wait_for(running, 30, what="job running")
        # Logs travel CLI -> controller (TLS) -> agent (mutual TLS) and back.
        logs = wait_for(lambda: (r := cli(env, "alloc", "logs", alloc_id)).returncode == 0
                        and "hi-over-tls" in r.stdout and r, 20, what="logs")
        assert logs
        # The replica asked gathers its peers' status over TLS, each checked as a server.
        ctx = ssl.create_default_context(cafile=str(data / "tls" / "ca.pem"))
        ctx.load_cert_chain(data / "tls" / "cli.pem", data / "tls" / "cli-key.pem")
        members = http("GET", f"{url}/v1/status/members", token=token,
                       context=ctx).body["members"]
        assert [(m["id"], m["reachable"]) for m in members] == [
            ("c1", True), ("c2", True), ("c3", True)], members
    finally:
        stop_dev(proc, state)
        log.close()
