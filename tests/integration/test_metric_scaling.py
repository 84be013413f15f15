"""Scaling on a real queue: a producer fills it, worker allocations drain it, and the job
scales up on the queue's length, drains it, and scales back down.

The queue is a directory of files: a worker claims an item by renaming it (atomic), works
on it for WORK_S, and files it under `done/` with its allocation id. Its length is pushed
through `PUT /v1/jobs/default/workers/metrics/queue_length` by a pusher thread (the
external source), as a queue's owner would.

With the prometheus source, each worker serves `worker_busy` (1 while it works) on its own
named port, the agent scrapes it, and the leader sums it: busy workers, scaled so that half
of them would do (`target_per_instance` 0.5), so the job grows while every worker is busy
and shrinks once the queue is empty.

`make test` runs the external-source scenario (the smoke); `make test-scaling`
(HACONTROL_TEST_SCALING=1) adds a leader failover in the middle of the scaling and the
prometheus source (which needs the job's named ports).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from .harness import Cluster, Replica, http, pid_alive, wait_for

LONG = os.environ.get("HACONTROL_TEST_SCALING") == "1"
long_only = pytest.mark.skipif(not LONG, reason="long scaling scenarios: make test-scaling")

WORK_S = 0.25
WORKER = r"""
import os, sys, time
queue, done, work_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
me = os.environ["HACONTROL_ALLOC_ID"]
while True:
    took = None
    for item in sorted(os.listdir(queue)):
        try:
            os.rename(os.path.join(queue, item), os.path.join(done, "claimed-" + item))
        except FileNotFoundError:
            continue  # another worker got it first
        took = item
        break
    if took is None:
        time.sleep(0.05)
        continue
    time.sleep(work_s)
    os.rename(os.path.join(done, "claimed-" + took), os.path.join(done, took + "@" + me))
"""


# The same worker, which also says whether it is busy: `worker_busy` (1 while it works on an
# item, 0 while it waits) in Prometheus' text format on its own port.
SCRAPED_WORKER = r"""
import http.server, os, sys, threading, time
queue, done, work_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
me = os.environ["HACONTROL_ALLOC_ID"]
busy = [0]

class Gauge(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"# TYPE worker_busy gauge\nworker_busy {busy[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(
    ("127.0.0.1", int(os.environ["HACONTROL_PORT_METRICS"])), Gauge)
threading.Thread(target=server.serve_forever, daemon=True).start()
while True:
    took = None
    for item in sorted(os.listdir(queue)):
        try:
            os.rename(os.path.join(queue, item), os.path.join(done, "claimed-" + item))
        except FileNotFoundError:
            continue
        took = item
        break
    busy[0] = 0 if took is None else 1
    if took is None:
        time.sleep(0.05)
        continue
    time.sleep(work_s)
    os.rename(os.path.join(done, "claimed-" + took), os.path.join(done, took + "@" + me))
"""


def worker_job(queue: Path, done: Path, **scaling: Any) -> dict[str, Any]:
    return {"command": [sys.executable, "-c", WORKER, str(queue), str(done), str(WORK_S)],
            "count": 1, "resources": {"cpu": 0.1, "memory_mb": 64},
            "scaling": {"min": 1, "max": 4, "cooldown_s": 1, "scale_down_delay_s": 3,
                        "metric": {"name": "queue_length", "source": "external",
                                   "stale_s": 5},
                        "target_per_instance": 5, **scaling}}


class Pusher:
    """Pushes the queue's length to the leader every `every_s`, following redirects and
    looking for the leader again when the one it knew stops answering."""

    def __init__(self, c: Cluster, queue: Path, every_s: float = 0.3) -> None:
        self.c = c
        self.queue = queue
        self.every_s = every_s
        self.stop = threading.Event()
        self.pushed = 0
        self.failed = 0
        self.target: Replica | None = None

    def push_once(self) -> bool:
        if self.target is None or not self.target.proc.alive():
            self.target = self.c.leader()
        url = f"{self.target.api}/v1/jobs/default/workers/metrics/queue_length"
        body = {"value": len(os.listdir(self.queue))}
        for _ in range(3):
            resp = http("PUT", url, body, token=self.c.token, timeout=2)
            if resp.status == 307:
                url = resp.headers["Location"]
                continue
            if resp.status == 200:
                return True
            break
        self.target = None
        return False

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                ok = self.push_once()
            except (OSError, AssertionError):
                ok = False
                self.target = None
            self.pushed += ok
            self.failed += not ok
            self.stop.wait(self.every_s)


@contextmanager
def pushing(c: Cluster, queue: Path) -> Iterator[Pusher]:
    p = Pusher(c, queue)
    t = threading.Thread(target=p.run, daemon=True)
    t.start()
    try:
        yield p
    finally:
        p.stop.set()
        t.join(10)


def count(c: Cluster) -> int:
    n: int = c.api("GET", "/v1/jobs/default/workers").body["job"]["count"]
    return n


def running(c: Cluster) -> list[dict[str, Any]]:
    return [a for a in c.allocs("workers")
            if a["state"] == "running" and a["desired"] == "run" and pid_alive(a["pid"])]


def fill(queue: Path, items: int) -> None:
    """The producer: `items` work items, a few at a time."""
    for i in range(items):
        (queue / f"item-{i:05d}").write_text("work")
        if i % 10 == 9:
            time.sleep(0.05)


def scaled_events(c: Cluster) -> list[dict[str, Any]]:
    evs = c.api("GET", "/v1/events?follow=false&type=job_scaled").body["events"]
    return [e for e in evs if e["job"] == "workers" and e.get("source") == "autoscaler"]


def queue_dirs(tmp_path: Path) -> tuple[Path, Path]:
    queue, done = tmp_path / "queue", tmp_path / "done"
    queue.mkdir()
    done.mkdir()
    return queue, done


def test_workers_scale_up_on_the_queue_drain_it_and_scale_back_down(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    queue, done = queue_dirs(tmp_path)
    cluster.write("PUT", "/v1/jobs/default/workers", worker_job(queue, done))
    wait_for(lambda: len(running(cluster)) == 1, 30, what="one worker running")
    items = 80
    with pushing(cluster, queue) as pusher:
        fill(queue, items)
        # 80 waiting at 5 per worker: 16, capped at the maximum of 4.
        wait_for(lambda: count(cluster) == 4, 20, what="scaled up to 4")
        wait_for(lambda: len(running(cluster)) == 4, 20, what="4 workers running")
        assert os.listdir(queue), "the queue drained before the job scaled: test too short"
        wait_for(lambda: len([f for f in os.listdir(done) if "@" in f]) == items, 60,
                 what="every item worked")
        assert not os.listdir(queue)
        # Empty for scale_down_delay_s (3 s): back to the minimum.
        wait_for(lambda: count(cluster) == 1, 30, what="scaled back down to 1")
        wait_for(lambda: len(running(cluster)) == 1, 30, what="one worker left")
        assert pusher.pushed > 0
    workers = {f.split("@", 1)[1] for f in os.listdir(done)}
    assert len(workers) >= 3, f"the added workers drained the queue too: {workers}"
    evs = scaled_events(cluster)
    assert [e["count"] for e in evs][0] > 1 and evs[-1]["count"] == 1, evs
    assert all("metric total" in e["reason"] for e in evs)
    ups = [e["count"] for e in evs if e["count"] > 1]
    assert max(ups) == 4


@long_only
def test_a_leader_failover_mid_scaling_waits_for_fresh_values(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    queue, done = queue_dirs(tmp_path)
    job = worker_job(queue, done, max=6, scale_down_delay_s=4)
    cluster.write("PUT", "/v1/jobs/default/workers", job)
    wait_for(lambda: len(running(cluster)) == 1, 30, what="one worker running")
    items = 150
    with pushing(cluster, queue) as pusher:
        fill(queue, items)
        wait_for(lambda: count(cluster) >= 4, 20, what="scaling up")
        old = cluster.leader()
        old.proc.kill9()
        new = cluster.leader(timeout=30)
        assert new is not old
        # The new leader knows no value until the pusher finds it; then scaling goes on.
        wait_for(lambda: cluster.api("GET", "/v1/jobs/default/workers/metrics",
                                     replica=new).body["total"] is not None, 20,
                 what="the new leader has a pushed value")
        wait_for(lambda: len([f for f in os.listdir(done) if "@" in f]) == items, 90,
                 what="every item worked")
        wait_for(lambda: count(cluster) == 1, 40, what="scaled back down to 1")
        assert pusher.pushed > 0
    counts = [e["count"] for e in scaled_events(cluster)]
    peak = counts.index(max(counts))
    # Up to a peak, then down to the minimum: no flapping, failover or not.
    assert counts[:peak + 1] == sorted(counts[:peak + 1]), counts
    assert counts[peak:] == sorted(counts[peak:], reverse=True), counts
    assert max(counts) >= 4 and counts[-1] == 1, counts


@long_only
def test_workers_scale_on_the_busy_gauge_the_agent_scrapes(
        cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_agent("n1")
    queue, done = queue_dirs(tmp_path)
    job = worker_job(queue, done, target_per_instance=0.5,
                     metric={"name": "worker_busy", "source": "prometheus",
                             "port": "metrics", "interval_s": 0.5})
    job["command"][2] = SCRAPED_WORKER
    job["ports"] = [{"name": "metrics"}]
    resp = cluster.write("PUT", "/v1/jobs/default/workers", job)
    assert resp.status == 200, resp
    wait_for(lambda: len(running(cluster)) == 1, 30, what="one worker running")
    items = 100
    fill(queue, items)
    wait_for(lambda: count(cluster) == 4, 30, what="scaled up to 4 on busy workers")
    wait_for(lambda: len(running(cluster)) == 4, 20, what="4 workers running")
    # The scraped values, as the leader keeps them (under each allocation's metrics).
    wait_for(lambda: [a for a in cluster.allocs("workers", replica=cluster.leader())
                      if (a.get("metrics") or {}).get("scaling_metric") is not None], 10,
             what="scraped values on the leader")
    wait_for(lambda: len([f for f in os.listdir(done) if "@" in f]) == items, 60,
             what="every item worked")
    wait_for(lambda: count(cluster) == 1, 30, what="scaled back down to 1")
    wait_for(lambda: len(running(cluster)) == 1, 30, what="one worker left")
    workers = {f.split("@", 1)[1] for f in os.listdir(done)}
    assert len(workers) >= 3, workers
    counts = [e["count"] for e in scaled_events(cluster)]
    assert max(counts) == 4 and counts[-1] == 1, counts
