"""Scheduling against a real cluster: constraints, rollouts, batch DAGs, drain, preemption,
events and quotas under concurrency."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.request

from .harness import Cluster, http, pid_alive, wait_for

SLEEP = {"command": ["sleep", "600"], "resources": {"cpu": 0.1, "memory_mb": 16},
         "stop": {"signal": "SIGTERM", "timeout_s": 2.0}}


def allocs(c: Cluster, job: str) -> list[dict]:
    return c.allocs(job)


def live(c: Cluster, job: str) -> list[dict]:
    return [a for a in allocs(c, job) if a["desired"] == "run" and a["state"] == "running"
            and pid_alive(a["pid"])]


def test_constraints_place_by_label_and_explain_pending(cluster: Cluster) -> None:
    cluster.start_agent("n1", labels={"zone": "a"})
    cluster.start_agent("n2", labels={"zone": "b"})
    wait_for(lambda: len(cluster.api("GET", "/v1/nodes").body["nodes"]) == 2, 20,
             what="two nodes")
    spec = {**SLEEP, "count": 2,
            "constraints": [{"attribute": "label.zone", "operator": "=", "value": "b"}]}
    assert cluster.write("PUT", "/v1/jobs/default/web", spec).status == 200
    running = wait_for(lambda: len(live(cluster, "web")) == 2 and live(cluster, "web"), 20,
                       what="placed on zone b")
    assert {a["node"] for a in running} == {"n2"}
    impossible = {**SLEEP, "count": 1,
                  "constraints": [{"attribute": "label.zone", "operator": "=", "value": "z"}]}
    cluster.write("PUT", "/v1/jobs/default/nowhere", impossible)

    def reason() -> str | None:
        a = cluster.leader()
        allocs_ = cluster.api("GET", "/v1/allocations?job=nowhere", replica=a).body
        got = [x.get("pending_reason") for x in allocs_["allocations"]]
        return got[0] if got and got[0] else None
    text = wait_for(reason, 20, what="a pending reason")
    assert "2" in text and "constraint" in text, text
    # The counts tell the one waiting for a node (queued) from those placed.
    listed = {j["name"]: j["counts"] for j in cluster.api("GET", "/v1/jobs").body["jobs"]}
    assert (listed["nowhere"]["pending"], listed["nowhere"]["queued"]) == (1, 1), listed
    assert (listed["web"]["running"], listed["web"]["queued"]) == (2, 0), listed
    one = cluster.api("GET", "/v1/jobs/default/nowhere").body["job"]["counts"]
    assert one["queued"] == 1, one
    # distinct_nodes: two instances never share a node.
    spread = {**SLEEP, "count": 2, "constraints": [{"operator": "distinct_nodes"}]}
    cluster.write("PUT", "/v1/jobs/default/spread", spread)
    two = wait_for(lambda: len(live(cluster, "spread")) == 2 and live(cluster, "spread"), 20,
                   what="distinct placement")
    assert {a["node"] for a in two} == {"n1", "n2"}


def test_rolling_update_then_revert(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    spec = {**SLEEP, "count": 3, "env": {"V": "1"},
            "update": {"max_parallel": 1, "min_healthy_s": 0.3, "deadline_s": 60}}
    cluster.write("PUT", "/v1/jobs/default/web", spec)
    wait_for(lambda: len(live(cluster, "web")) == 3, 20, what="v1 running")
    cluster.write("PUT", "/v1/jobs/default/web", {**spec, "env": {"V": "2"}})
    lowest = 3
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = live(cluster, "web")
        lowest = min(lowest, len(running))
        job = cluster.api("GET", "/v1/jobs/default/web").body["job"]
        if (job["deployment"] is None and len(running) == 3
                and all(a["version"] == 2 for a in running)):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("rollout did not finish")
    assert lowest >= 2, f"capacity dropped to {lowest} during a max_parallel=1 rollout"
    versions = cluster.api("GET", "/v1/jobs/default/web/versions").body["versions"]
    assert [v["version"] for v in versions] == [2, 1] and versions[0]["stable"]
    resp = cluster.write("POST", "/v1/jobs/default/web/revert", {"version": 1})
    assert resp.status == 200 and resp.body["job"]["version"] == 3
    assert resp.body["job"]["env"] == {"V": "1"}
    wait_for(lambda: len([a for a in live(cluster, "web") if a["version"] == 3]) == 3, 60,
             what="reverted instances running")


def test_failed_rollout_auto_reverts(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    good = {**SLEEP, "count": 2,
            "update": {"max_parallel": 1, "min_healthy_s": 0.2, "deadline_s": 5,
                       "auto_revert": True}}
    cluster.write("PUT", "/v1/jobs/default/web", good)
    before = {a["pid"] for a in wait_for(lambda: len(live(cluster, "web")) == 2
                                         and live(cluster, "web"), 20, what="v1")}
    bad = {**good, "command": ["false"], "restart": {"policy": "never"}}
    cluster.write("PUT", "/v1/jobs/default/web", bad)

    def reverted() -> dict | None:
        job = cluster.api("GET", "/v1/jobs/default/web").body["job"]
        return job if job["version"] == 3 and job["command"] == ["sleep", "600"] else None
    wait_for(reverted, 40, what="auto revert to the good spec")
    # The old instances were never taken down for the failed version.
    assert before <= {a["pid"] for a in allocs(cluster, "web") if pid_alive(a["pid"])}


def test_batch_jobs_run_in_dependency_order_and_cycles_are_refused(cluster: Cluster,
                                                                   tmp_path) -> None:
    cluster.start_agent("n1")
    marker = tmp_path / "order"
    first = {"type": "batch", "count": 1, "command": ["sh", "-c", f"echo a >> {marker}"],
             "restart": {"policy": "on-failure"}}
    second = {"type": "batch", "count": 1, "depends_on": ["a"],
              "command": ["sh", "-c", f"echo b >> {marker}"]}
    assert cluster.write("PUT", "/v1/jobs/default/b", second).status == 200
    assert cluster.write("PUT", "/v1/jobs/default/a", first).status == 200
    wait_for(lambda: cluster.api("GET", "/v1/jobs/default/b").body["job"]["status"]
             == "complete", 30, what="b complete")
    assert marker.read_text().split() == ["a", "b"]
    resp = cluster.api("PUT", "/v1/jobs/default/a", {**first, "depends_on": ["b"]})
    assert resp.status == 422 and resp.body["error"]["field"] == "depends_on"


def test_drain_moves_work_and_takes_no_more(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    cluster.write("PUT", "/v1/jobs/default/web", {**SLEEP, "count": 2,
                                                   "update": {"max_parallel": 1}})
    wait_for(lambda: len(live(cluster, "web")) == 2, 20, what="running on n1")
    cluster.start_agent("n2")
    wait_for(lambda: len(cluster.api("GET", "/v1/nodes").body["nodes"]) == 2, 20,
             what="n2 registered")
    resp = cluster.write("POST", "/v1/nodes/n1/drain", {"enable": True, "deadline_s": 30})
    assert resp.status == 200 and resp.body["node"]["drain"] is True
    wait_for(lambda: len(live(cluster, "web")) == 2
             and {a["node"] for a in live(cluster, "web")} == {"n2"}, 30, what="moved to n2")
    cluster.write("PUT", "/v1/jobs/default/more", {**SLEEP, "count": 1})
    more = wait_for(lambda: live(cluster, "more"), 20, what="new job placed")
    assert more[0]["node"] == "n2"
    assert cluster.write("POST", "/v1/nodes/n1/drain", {"enable": False}).body["node"][
        "eligible"] is True


def test_high_priority_service_preempts_batch(cluster: Cluster) -> None:
    cluster.start_agent("n1", cpu=1.0)
    low = {**SLEEP, "type": "batch", "priority": 10, "count": 1,
           "resources": {"cpu": 0.8, "memory_mb": 16}}
    cluster.write("PUT", "/v1/jobs/default/low", low)
    victim = wait_for(lambda: live(cluster, "low"), 20, what="batch running")[0]
    high = {**SLEEP, "priority": 90, "preempt": True, "count": 1,
            "resources": {"cpu": 0.5, "memory_mb": 16}}
    cluster.write("PUT", "/v1/jobs/default/high", high)
    wait_for(lambda: live(cluster, "high"), 30, what="service placed after preemption")
    assert not pid_alive(victim["pid"])
    evs = cluster.api("GET", "/v1/events?follow=false&type=allocs_preempted").body["events"]
    assert any(victim["id"] in e["allocations"] for e in evs)


def test_event_stream_resumes_from_an_index(cluster: Cluster) -> None:
    cluster.write("PUT", "/v1/jobs/default/web", {**SLEEP, "count": 0})
    page = cluster.api("GET", "/v1/events?index=0&follow=false").body
    types = [e["type"] for e in page["events"]]
    assert "job_registered" in types
    last = page["index"]
    got: list[dict] = []
    url = cluster.leader().api + f"/v1/events?index={last}"

    def reader() -> None:
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cluster.token}"})
        with urllib.request.urlopen(req, timeout=20) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    event = json.loads(line[6:])
                    # Only this job's: the controllers' own entries (their credential, a
                    # token prune) may land in between.
                    if event.get("job") == "web" or event["type"].startswith("job_"):
                        got.append(event)
                    if len(got) >= 2:
                        return
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    cluster.write("POST", "/v1/jobs/default/web/scale", {"count": 1})
    cluster.write("POST", "/v1/jobs/default/web/scale", {"count": 2})
    t.join(20)
    assert [e["type"] for e in got] == ["job_scaled", "job_scaled"]
    assert all(e["index"] > last for e in got)


def test_concurrent_scale_ups_never_exceed_quota(cluster: Cluster) -> None:
    assert cluster.write("PUT", "/v1/namespaces/team", {"quota": {"processes": 20}}).status == 200
    for j in range(5):
        cluster.write("PUT", f"/v1/jobs/team/j{j}", {**SLEEP, "count": 0})
    seen: list[int] = []
    stop = threading.Event()

    def observe() -> None:
        while not stop.is_set():
            for r in cluster.replicas:
                resp = http("GET", f"{r.api}/v1/namespaces/team", token=cluster.token)
                if resp.status == 200:
                    seen.append(resp.body["namespace"]["usage"]["processes"])

    def scale(i: int) -> None:
        r = random.Random(i)
        replica = cluster.replicas[i % 3]
        http("POST", f"{replica.api}/v1/jobs/team/j{r.randrange(5)}/scale",
             {"count": r.randint(1, 10)}, token=cluster.token)
    obs = threading.Thread(target=observe)
    obs.start()
    threads = [threading.Thread(target=scale, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    obs.join(10)
    final = cluster.api("GET", "/v1/namespaces/team").body["namespace"]
    assert seen and max(seen) <= 20 and final["usage"]["processes"] <= 20
    counts = [cluster.api("GET", f"/v1/jobs/team/j{j}").body["job"]["count"] for j in range(5)]
    assert sum(counts) == final["usage"]["processes"]


def test_one_job_spreads_over_two_real_nodes(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    cluster.start_agent("n2")
    wait_for(lambda: len(cluster.api("GET", "/v1/nodes").body["nodes"]) == 2, 20,
             what="two nodes")
    assert cluster.write("PUT", "/v1/jobs/default/web", {**SLEEP, "count": 4}).status == 200
    running = wait_for(lambda: len(live(cluster, "web")) == 4 and live(cluster, "web"), 30,
                       what="four allocations running")
    on = [a["node"] for a in running]
    assert sorted(on) == ["n1", "n1", "n2", "n2"], on


def test_a_non_zero_exit_never_restarted_is_failed_everywhere(cluster: Cluster) -> None:
    cluster.start_agent("n1")
    spec = {"command": ["sh", "-c", "exit 3"], "restart": {"policy": "never"},
            "resources": {"cpu": 0.1, "memory_mb": 16}}
    assert cluster.write("PUT", "/v1/jobs/default/three", spec).status == 200

    def failed() -> dict | None:
        job = cluster.api("GET", "/v1/jobs/default/three").body["job"]
        return job if job["counts"]["failed"] == 1 else None
    job = wait_for(failed, 30, what="the allocation failed")
    assert job["status"] == "failed" and job["counts"]["exited"] == 0, job
    (a,) = job["allocations"]
    assert a["state"] == "failed" and a["exit_code"] == 3 and "never" in a["message"], a
    events = cluster.api("GET", "/v1/events?follow=false&type=alloc_failed").body["events"]
    assert [e["alloc"] for e in events] == [a["id"]] and events[0]["exit_code"] == 3
    # Exit 0 with the same policy is no failure.
    cluster.write("PUT", "/v1/jobs/default/zero", {**spec, "command": ["true"]})
    ok = wait_for(lambda: [x for x in cluster.allocs("zero") if x["state"] == "exited"], 30,
                  what="exited")
    assert ok[0]["exit_code"] == 0
    assert cluster.api("GET", "/v1/jobs/default/zero").body["job"]["status"] == "running"


def test_cli_plan_then_run_with_check_index_follows_the_deployment(cluster: Cluster,
                                                                    tmp_path) -> None:
    import os
    import subprocess
    import sys
    cluster.start_agent("n1")
    wait_for(lambda: len(cluster.api("GET", "/v1/nodes").body["nodes"]) == 1, 20,
             what="the node")
    env = {**os.environ, "HACONTROL_ADDR": ",".join(r.api for r in cluster.replicas),
           "HACONTROL_TOKEN": cluster.token}

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hacontrol", *argv], env=env,
                              capture_output=True, text=True, timeout=90)
    job_file = tmp_path / "web.json"
    job_file.write_text(json.dumps({"name": "web", **SLEEP, "count": 2}))
    plan = cli("job", "plan", str(job_file), "--json")
    assert plan.returncode == 1, plan.stderr  # changes to make
    answer = json.loads(plan.stdout)
    assert answer["job_modify_index"] == 0 and answer["changes"]["create"] == 2
    assert {p["node"] for p in answer["placements"]} == {"n1"}
    assert cluster.api("GET", "/v1/jobs/default/web").status == 404  # the plan changed nothing
    run = cli("job", "run", str(job_file), "--check-index", "0")
    assert run.returncode == 0, run.stderr
    assert "succeeded: 2 of 2 allocations running and healthy" in run.stdout, run.stdout
    assert len(live(cluster, "web")) == 2  # waited until they ran
    again = cli("job", "run", str(job_file), "--check-index", "0")
    assert again.returncode == 1 and "check_index" not in again.stdout
    assert "already exists" in again.stderr, again.stderr
    job_file.write_text(json.dumps({"name": "web", "command": ["sh", "-c", "exit 3"],
                                    "restart": {"policy": "never"}, "count": 1,
                                    "resources": {"cpu": 0.1, "memory_mb": 16}}))
    failed = cli("job", "run", str(job_file))
    assert failed.returncode == 1
    assert "failed: exited with code 3; restart policy is never" in failed.stderr, failed.stderr
