"""Agent features through the controllers: limits and OOM, controls, logs, metrics, health,
and instances that stop themselves when cut off from the leader."""

from __future__ import annotations

import os
import pwd
import sys
import time
import urllib.request

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import Cluster, free_ports, pid_alive, wait_for

PY = sys.executable


def running(c: Cluster, job: str) -> list[dict]:
    return [a for a in c.allocs(job) if a["state"] == "running" and pid_alive(a["pid"])]


def test_memory_limit_oom_is_reported(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    hog = {"command": [PY, "-c", "b=[]\nwhile True: b.append(bytearray(1<<20))"],
           "count": 1, "resources": {"cpu": 0.5, "memory_mb": 50},
           "restart": {"policy": "never"}}
    cluster.write("PUT", "/v1/jobs/default/hog", hog)
    a = wait_for(lambda: [x for x in cluster.allocs("hog") if x["reason"] == "oom"], 30,
                 what="oom reported")[0]
    assert a["state"] in ("exited", "failed")


def test_pause_resume_signal_restart_and_logs(cluster: Cluster, tmp_path) -> None:
    cluster.start_agent("n1")
    marker = tmp_path / "usr1"
    script = (f"import signal,sys,time\n"
              f"signal.signal(signal.SIGUSR1, lambda *a: open({str(marker)!r},'w').write('x'))\n"
              f"print('hello from the job', flush=True)\n"
              f"while True: time.sleep(0.05)\n")
    cluster.write("PUT", "/v1/jobs/default/w", {"command": [PY, "-c", script], "count": 1,
                                                 "resources": {"cpu": 0.1, "memory_mb": 64}})
    alloc = wait_for(lambda: running(cluster, "w"), 30, what="running")[0]
    aid = alloc["id"]
    base = f"/v1/allocations/{aid}"
    follower = cluster.followers()[0]  # controls work through any replica

    def logs(tail: int = 10) -> str:
        req = urllib.request.Request(f"{follower.api}{base}/logs?tail={tail}",
                                     headers={"Authorization": f"Bearer {cluster.token}"})
        return urllib.request.urlopen(req, timeout=10).read().decode()
    # The job prints once its signal handler is installed; a signal before that would
    # meet Python's start-up, not the job.
    wait_for(lambda: "hello from the job" in logs(), 20, what="job ready")
    resp = cluster.api("POST", f"{base}/pause", {}, replica=follower)
    assert resp.status == 200, resp
    wait_for(lambda: psutil.Process(alloc["pid"]).status() == psutil.STATUS_STOPPED
             or cluster.api("GET", base).body["allocation"]["state"] == "paused", 10,
             what="paused")
    assert cluster.api("POST", f"{base}/resume", {}).status == 200
    wait_for(lambda: cluster.api("GET", base).body["allocation"]["state"] == "running", 10,
             what="resumed")
    # Thawed in the OS too (a frozen task shows as stopped or in uninterruptible sleep).
    wait_for(lambda: psutil.Process(alloc["pid"]).status() not in (
        psutil.STATUS_STOPPED, psutil.STATUS_DISK_SLEEP, psutil.STATUS_TRACING_STOP), 10,
        what="thawed")
    assert cluster.api("POST", f"{base}/signal", {"signal": "SIGUSR1"}).status == 200
    wait_for(marker.exists, 10, what="signal delivered")
    bad = cluster.api("POST", f"{base}/signal", {"signal": "SIGNOPE"})
    assert bad.status == 422
    assert cluster.api("POST", f"{base}/restart", {}).status == 200
    after = wait_for(lambda: [a for a in running(cluster, "w") if a["pid"] != alloc["pid"]
                              and a["restarts"] >= 1], 20, what="restarted")[0]
    assert after["id"] == aid
    assert "hello from the job" in logs()


def test_metrics_and_health(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    port = free_ports(1)[0]
    web = {"command": [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"], "count": 1,
           "resources": {"cpu": 0.2, "memory_mb": 128},
           "health": {"type": "http", "port": port, "path": "/", "interval_s": 0.2,
                      "grace_s": 0.1}}
    cluster.write("PUT", "/v1/jobs/default/web", web)
    alloc = wait_for(lambda: [a for a in cluster.allocs("web", replica=cluster.leader())
                              if a["health"] == "healthy"], 30, what="healthy")[0]
    leader = cluster.leader()

    def sampled() -> dict | None:
        # The first sample may be taken the moment the server exec'd, before its imports
        # (about 0.5 MB resident then); later samples follow its memory as it changes.
        a = cluster.api("GET", f"/v1/allocations/{alloc['id']}", replica=leader).body
        m = a["allocation"]["metrics"]
        return m if m and m["rss_bytes"] > 1_000_000 else None
    wait_for(sampled, 20, what="metrics of the running server reported")
    text = urllib.request.urlopen(urllib.request.Request(
        f"{leader.api}/metrics", headers={"Authorization": f"Bearer {cluster.token}"}),
        timeout=10).read().decode()
    assert "hacontrol_raft_term" in text and f'allocation="{alloc["id"]}"' in text
    # The instruments are wired into the real replica: the job's write was committed and
    # applied, the leader placed it, and the request was timed by its route's pattern.
    values = {s.name + str(sorted(s.labels.items())): s.value
              for f in text_string_to_metric_families(text) for s in f.samples}
    for name in ("hacontrol_raft_commit_duration_seconds_count",
                 "hacontrol_raft_apply_duration_seconds_count",
                 "hacontrol_scheduler_placement_duration_seconds_count",
                 "hacontrol_scheduler_placements_total"):
        assert values[name + "[]"] >= 1, name
    assert any(k.startswith("hacontrol_http_request_duration_seconds_count") and
               "('route', '/v1/allocations/{id}')" in k for k in values), values.keys()
    # The garbage collector policy's figures are exported (their values: test_collector;
    # a young replica may not have frozen anything yet).
    for name in ("hacontrol_gc_frozen_objects", "hacontrol_gc_full_collections_total",
                 "hacontrol_gc_sweeps_total", "hacontrol_gc_sweep_unreachable_total"):
        assert name + "[]" in values, name


def test_cut_off_instances_stop_after_disconnect_timeout(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    spec = {"command": ["sleep", "600"], "count": 1, "disconnect": {"stop_after_s": 1.0},
            "resources": {"cpu": 0.1, "memory_mb": 16}}
    cluster.write("PUT", "/v1/jobs/default/d", spec)
    keep = {"command": ["sleep", "600"], "count": 1, "resources": {"cpu": 0.1, "memory_mb": 16}}
    cluster.write("PUT", "/v1/jobs/default/k", keep)
    d = wait_for(lambda: running(cluster, "d"), 30, what="d running")[0]
    k = wait_for(lambda: running(cluster, "k"), 30, what="k running")[0]
    for r in cluster.replicas:
        r.proc.kill9()
    started = time.monotonic()
    wait_for(lambda: not pid_alive(d["pid"]), 15, what="cut-off instance stopped")
    assert time.monotonic() - started >= 0.9
    assert pid_alive(k["pid"])  # jobs without the setting keep running


def test_autoscaling_follows_reported_cpu(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    burner = {"command": [PY, "-c", "while True: pass"], "count": 1,
              "resources": {"cpu": 0.2, "memory_mb": 32},
              "scaling": {"min": 1, "max": 3, "cpu_target": 0.5, "cooldown_s": 1}}
    cluster.write("PUT", "/v1/jobs/default/burn", burner)
    wait_for(lambda: cluster.api("GET", "/v1/jobs/default/burn").body["job"]["count"] == 3, 60,
             what="scaled up to the maximum")
    evs = cluster.api("GET", "/v1/events?follow=false&type=job_scaled").body["events"]
    auto = [e for e in evs if e.get("source") == "autoscaler" and e["job"] == "burn"]
    assert auto and "cpu" in auto[0]["reason"]
    assert cluster.write("DELETE", "/v1/jobs/default/burn").status == 200


def test_jobs_run_as_nobody_unless_they_ask_for_root(cluster: Cluster) -> None:
    if os.geteuid() != 0:
        pytest.skip("an agent that is not root runs every job as itself")
    cluster.start_agent("n1", default_user=None)  # the agent's own default
    sleep = {"command": ["sleep", "600"], "count": 1,
             "resources": {"cpu": 0.1, "memory_mb": 32}}
    cluster.write("PUT", "/v1/jobs/default/plain", sleep)
    cluster.write("PUT", "/v1/jobs/default/asroot", {**sleep, "user": "root"})
    plain = wait_for(lambda: running(cluster, "plain"), 30, what="plain running")[0]
    asroot = wait_for(lambda: running(cluster, "asroot"), 30, what="asroot running")[0]
    assert psutil.Process(plain["pid"]).uids().real == pwd.getpwnam("nobody").pw_uid
    assert psutil.Process(asroot["pid"]).uids().real == 0
