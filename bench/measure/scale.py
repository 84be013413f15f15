"""The scheduler benchmark's parts for large runs (`bench/scheduler.py` uses them).

* `SimAgents`: the simulated nodes, split over several `bench/simagent.py` processes (one
  asyncio process for 5,000 nodes can fall behind on its own event loop, and a node whose
  next request is late by the leader's grace period is marked down for the simulator's
  sake, not the leader's); their statistics merged.
* `EventLog`: the leader's log as its events tell it (plans, instances running, nodes
  marked down), read by a thread of its own from a follower.
* `soak`: nodes keep heartbeating while a client polls the read routes a user would poll;
  the figures are the reads' latencies per route and the nodes marked down.
* `MachineLoad`: how busy the whole machine was over a window, and how much of it was ours.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from tests.integration.harness import Cluster, Replica

SIMAGENT = Path(__file__).resolve().parent.parent / "simagent.py"
NS = "default"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def quantile(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    ys = sorted(xs)
    return round(ys[min(len(ys) - 1, int(p * len(ys)))], 1)


# ------------------------------------------------------------ simulated nodes

_SUMMED = ("syncs", "reports_sent", "redirects", "answer_bytes", "idle_answers",
           "idle_answer_bytes", "assignments_seen", "running_acked", "stopped_acked",
           "between_syncs_over_1s", "nodes")
_LARGEST = ("max_answer_bytes", "max_between_syncs_s", "last_seen_wall",
            "last_running_acked_wall")


def merge_sim_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The statistics of several simagent processes as if one process had made them."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    out: dict[str, Any] = {k: sum(int(p.get(k) or 0) for p in parts) for k in _SUMMED}
    for k in _LARGEST:
        vals = [p[k] for p in parts if p.get(k) is not None]
        out[k] = max(vals) if vals else None
    worst = max(parts, key=lambda p: p.get("max_heartbeat_gap_s") or 0)
    out["max_heartbeat_gap_s"] = worst.get("max_heartbeat_gap_s")
    out["max_heartbeat_gap_node"] = worst.get("max_heartbeat_gap_node")
    errors: Counter[str] = Counter()
    hist: Counter[int] = Counter()
    for p in parts:
        errors.update(p.get("errors") or {})
        hist.update({int(k): v for k, v in (p.get("latency_hist_ms") or {}).items()})
    out["errors"] = dict(errors)
    total = sum(hist.values())

    def q(frac: float) -> int | None:  # whole milliseconds: the histogram's resolution
        if not total:
            return None
        rank, seen = frac * total, 0
        for ms in sorted(hist):
            seen += hist[ms]
            if seen > rank:
                return ms
        return max(hist)
    out["sync_p50_ms"], out["sync_p99_ms"] = q(0.5), q(0.99)
    out["sync_max_ms"] = max(hist) if hist else None
    out["processes"] = len(parts)
    if out["syncs"]:
        out["answer_bytes_mean"] = round(out["answer_bytes"] / out["syncs"])
    if out["idle_answers"]:
        out["idle_answer_bytes_mean"] = round(out["idle_answer_bytes"] / out["idle_answers"])
    return out


class SimAgents:
    """`nodes` simulated nodes over `procs` simagent processes, each stopped by pid.

    `snapshot()` asks every process for its statistics so far and has it count afresh
    (SIGUSR1), so the statistics of one phase (placement, soak) stay apart.
    """

    def __init__(self, cluster: Cluster, nodes: int, procs: int, wait_s: float | None,
                 full: bool, backoff_max_s: float = 2.0, ramp_s: float = 10.0) -> None:
        self.cluster, self.nodes, self.wait_s, self.full = cluster, nodes, wait_s, full
        self.backoff_max_s, self.ramp_s = backoff_max_s, ramp_s
        self.procs = max(1, min(procs, nodes))
        self.popens: list[subprocess.Popen[bytes]] = []

    def start(self) -> list[int]:
        c = self.cluster
        share, extra = divmod(self.nodes, self.procs)
        first = 0
        for i in range(self.procs):
            n = share + (1 if i < extra else 0)
            argv = [sys.executable, str(SIMAGENT), "--controllers",
                    ",".join(r.api for r in c.replicas), "--token-file", str(c.root / "token"),
                    "--nodes", str(n), "--first", str(first),
                    *(["--wait-s", str(self.wait_s)] if self.wait_s is not None else []),
                    # every process starts its nodes over the same ramp_s at most
                    "--stagger-s", str(min(0.005, self.ramp_s / max(n, 1))),
                    "--backoff-max-s", str(self.backoff_max_s)]
            if self.full:
                argv.append("--full")
            first += n
            err = open(c.root / f"simagent-{i + 1}.log", "ab")
            self.popens.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err,
                                                stdin=subprocess.DEVNULL))
            err.close()
        return [p.pid for p in self.popens]

    def alive(self) -> bool:
        return bool(self.popens) and all(p.poll() is None for p in self.popens)

    def snapshot(self, timeout: float = 20.0) -> dict[str, Any]:
        parts = []
        for p in self.popens:
            if p.poll() is not None:
                continue
            p.send_signal(signal.SIGUSR1)
            parts.append(_read_line(p, timeout))
        return merge_sim_stats(parts)

    def stop(self) -> dict[str, Any]:
        popens, self.popens = self.popens, []
        parts = []
        for p in popens:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in popens:
            try:
                out, _ = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
                continue
            lines = out.decode().strip().splitlines()
            try:
                parts.append(json.loads(lines[-1]))
            except (ValueError, IndexError):
                pass
        return merge_sim_stats(parts)


def _read_line(p: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert p.stdout is not None
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    if not ready:
        return {}
    try:
        parsed: dict[str, Any] = json.loads(p.stdout.readline())
    except ValueError:
        return {}
    return parsed


# ------------------------------------------------------------------- events


class EventLog:
    """The cluster's events as a follower's log recorded them, read every 0.2 s.

    The state machine keeps only the latest 5,000 events, and 100,000 instances going
    "running" push older ones out, so a thread reads them as they come (`truncated` says
    when some were missed anyway). Counted: plans (`allocs_placed`), instances that went
    running, nodes marked down; and the times at which the placed and running counts
    reached `total`.
    """

    def __init__(self, cluster: Cluster, replica: Replica, wall0: float, total: int) -> None:
        self.cluster, self.replica, self.wall0, self.total = cluster, replica, wall0, total
        self.last = "0"
        self.plans: list[tuple[float, int, int]] = []
        self.placed = 0
        self.running = 0
        self.placed_at: float | None = None  # wall time the placed count reached total
        self.running_at: float | None = None
        self.downs: list[tuple[float, str]] = []  # (wall time, node) marked down
        self.origin = wall0  # plans' times are given from this (the first submission)
        self.truncated = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        try:
            self.poll()
        except (OSError, KeyError, ValueError):
            pass

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.poll()
            except (OSError, KeyError, ValueError):
                pass

    def poll(self) -> None:
        # Unfiltered: the server caps an answer at 1000 events before applying a type filter,
        # so only the last event of an answer tells where the next one must start.
        while True:
            resp = self.cluster.api("GET", f"/v1/events?follow=false&index={self.last}",
                                    replica=self.replica, timeout=30)
            if resp.status != 200:
                return
            evs = resp.body["events"]
            if self.last != "0" and int(self.last.split(".")[0]) < resp.body["oldest_index"] - 1:
                self.truncated = True
            for e in evs:
                self.last = e["id"]
                if e["ts"] < self.wall0:
                    continue
                kind = e["type"]
                if kind == "allocs_placed":
                    n = len(e.get("placements") or [])
                    self.plans.append((e["ts"], e["index"], n))
                    self.placed += n
                    if self.placed_at is None and self.placed >= self.total:
                        self.placed_at = e["ts"]
                elif kind == "alloc_running":
                    self.running += 1
                    if self.running_at is None and self.running >= self.total:
                        self.running_at = e["ts"]
                elif kind == "node_down":
                    self.downs.append((e["ts"], e.get("node", "")))
            if len(evs) < 1000:
                return

    def downs_after(self, wall: float) -> int:
        return sum(1 for ts, _ in self.downs if ts >= wall)

    def summary(self) -> dict[str, Any]:
        plans = self.plans
        out: dict[str, Any] = {"placed": self.placed, "running": self.running,
                               "nodes_marked_down": len(self.downs),
                               "down_nodes": sorted({n for _, n in self.downs})[:20],
                               "maybe_incomplete": self.truncated}
        if not plans:
            return out
        gaps = [b[0] - a[0] for a, b in zip(plans, plans[1:], strict=False)]
        idx = [b[1] - a[1] for a, b in zip(plans, plans[1:], strict=False)]
        sizes = [p[2] for p in plans]
        out.update({
            "count": len(plans), "sizes": sizes if len(sizes) <= 30 else
            {"median": statistics.median(sizes), "min": min(sizes), "max": max(sizes)},
            "first_s": round(plans[0][0] - self.origin, 2),
            "last_s": round(plans[-1][0] - self.origin, 2),
            "median_interval_s": round(statistics.median(gaps), 3) if gaps else None,
            "max_interval_s": round(max(gaps), 3) if gaps else None,
            "median_entries_between": statistics.median(idx) if idx else None})
        return out


# -------------------------------------------------------------------- load


class MachineLoad:
    """The whole machine's CPU use over a window (100 = one core busy), next to ours."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.sys0 = psutil.cpu_times()
        self.ours0 = {k: _cpu_seconds(p) for k, p in pids.items()}
        self.me0 = time.process_time()
        self.load0 = os.getloadavg()

    def end(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        sys1 = psutil.cpu_times()
        busy = ((sum(sys1) - sys1.idle - getattr(sys1, "iowait", 0.0))
                - (sum(self.sys0) - self.sys0.idle - getattr(self.sys0, "iowait", 0.0)))
        per = {k: round(100 * (_cpu_seconds(p) - self.ours0[k]) / elapsed, 1)
               for k, p in self.pids.items()}
        per["bench client"] = round(100 * (time.process_time() - self.me0) / elapsed, 1)
        ours = sum(per.values())
        machine = 100 * busy / elapsed
        return {"seconds": round(elapsed, 1), "cpu_percent": per,
                "machine_busy_percent": round(machine, 1),
                "others_percent": round(max(0.0, machine - ours), 1),
                "cores": psutil.cpu_count(), "loadavg_before": [round(x, 2) for x in self.load0],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def _cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return t.user + t.system


# -------------------------------------------------------------------- soak

SOAK_ROUTES = ("/v1/jobs", "/v1/nodes", "/v1/allocations?job=bench-000",
               f"/v1/jobs/{NS}/bench-000")


class Reader:
    """One keep-alive HTTP connection to a replica; a read's latency is the time until
    the last byte of the answer arrived (the client's JSON parsing is not counted)."""

    def __init__(self, cluster: Cluster, replica: Replica) -> None:
        u = urlsplit(replica.api)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.headers = {"Authorization": f"Bearer {cluster.token}"}
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, int, float]:
        """(status, answer bytes, milliseconds)"""
        t0 = time.monotonic()
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            self.conn.request("GET", path, headers=self.headers)
            resp = self.conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        return resp.status, len(body), (time.monotonic() - t0) * 1000

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def soak(cluster: Cluster, seconds: float, events: EventLog | None,
         pause_s: float = 0.05) -> dict[str, Any]:
    """`seconds` of heartbeats while one client polls `SOAK_ROUTES` on the leader in turn
    (linearizable reads, as a user's CLI or dashboard makes them), `pause_s` apart; the
    figures: each route's latency quantiles, and the nodes marked down meanwhile."""
    leader = cluster.leader()
    wall0 = time.time()
    log(f"soak: {seconds:.0f}s of heartbeats with API reads on {leader.id} "
        f"({', '.join(SOAK_ROUTES)})")
    lat: dict[str, list[float]] = {r: [] for r in SOAK_ROUTES}
    size: dict[str, int] = {}
    errors: Counter[str] = Counter()
    reader = Reader(cluster, leader)
    t_end = time.monotonic() + seconds
    next_log = time.monotonic() + 60
    i = 0
    try:
        while time.monotonic() < t_end:
            route = SOAK_ROUTES[i % len(SOAK_ROUTES)]
            i += 1
            try:
                status, n, ms = reader.get(route)
            except (OSError, http.client.HTTPException) as exc:
                errors[f"{route}: {type(exc).__name__}"] += 1
                time.sleep(pause_s)
                continue
            if status == 200:
                lat[route].append(ms)
                size[route] = n
            else:
                errors[f"{route}: {status}"] += 1
            if time.monotonic() >= next_log:
                next_log += 60
                every = [x for xs in lat.values() for x in xs]
                log(f"soak: {len(every)} reads, p99 {quantile(every, 0.99)} ms; nodes marked "
                    f"down so far: {events.downs_after(wall0) if events else '?'}")
            time.sleep(pause_s)
    finally:
        reader.close()
    marked = 0
    for r in cluster.replicas:
        try:
            marked += r.proc.log.read_text(errors="replace").count("missed heartbeats")
        except OSError:
            pass
    body = cluster.api("GET", "/v1/nodes?stale=true", replica=leader, timeout=60).body
    every = [x for xs in lat.values() for x in xs]
    return {"seconds": seconds, "reads": len(every), "read_errors": dict(errors),
            "read_p50_ms": quantile(every, 0.5), "read_p99_ms": quantile(every, 0.99),
            "read_max_ms": round(max(every), 1) if every else None,
            "routes": {r: {"reads": len(xs), "p50_ms": quantile(xs, 0.5),
                           "p99_ms": quantile(xs, 0.99),
                           "max_ms": round(max(xs), 1) if xs else None,
                           "answer_bytes": size.get(r)} for r, xs in lat.items()},
            "nodes_marked_down": events.downs_after(wall0) if events else None,
            "nodes_not_ready_at_end": sum(1 for n in body["nodes"] if n["status"] != "ready"),
            "marked_down_in_logs_whole_run": marked}
