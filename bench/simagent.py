#!/usr/bin/env python3
"""Simulated nodes: many agents in one asyncio process that acknowledge without running.

    python bench/simagent.py --controllers URL[,URL...] --token-file FILE --nodes 200

Each simulated node speaks the agent protocol (`POST /v1/agent/sync`, see
`hacontrol/agent/link.py` and `hacontrol/api/agent_routes.py`): it registers, long-polls the
leader (which is also its heartbeat), follows `not_leader` answers to the leader, and for
every assignment reports "running" (desired run) or "stopped" (desired stop) at once, with a
fake pid, instead of starting a process. Nothing is ever started on this machine.

On SIGTERM or SIGINT it stops and prints one JSON object with its statistics to stdout:
sync counts, latencies (also as a histogram in whole milliseconds, so that the statistics
of several such processes can be merged), answer sizes, the longest time a node spent
between an answer and its next request (the leader counts a node alive while its request is
in flight and marks it down 3 s after its last contact), the longest gap between two
successful syncs of a node, and the wall-clock times at which it first saw its last new
assignment and had its last "running" report acknowledged. On SIGUSR1 it prints the same
object and carries on (the caller takes differences to measure one phase).

Several of these processes can share the nodes of one benchmark: `--first N` numbers this
one's nodes from N, so their names do not collide.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hacontrol.agent.assignments import HeldAssignments  # noqa: E402

RETRY_PAUSE_S = 0.1
FAKE_PID_BASE = 4_000_000  # above any real pid_max, so nobody mistakes it for a process


@dataclass
class Stats:
    syncs: int = 0
    reports_sent: int = 0
    redirects: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    answer_bytes: int = 0
    max_answer_bytes: int = 0
    # answers that carried no change for the node (the usual heartbeat answer)
    idle_answers: int = 0
    idle_answer_bytes: int = 0
    max_gap_s: float = 0.0
    max_gap_node: str = ""
    # between an answer and the node's next request: the time the leader does not see
    # the node (a node whose request is in flight counts as alive)
    max_between_s: float = 0.0
    between_over_1s: int = 0
    assignments_seen: int = 0
    running_acked: int = 0
    stopped_acked: int = 0
    last_seen_wall: float | None = None
    last_running_acked_wall: float | None = None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        hist = collections.Counter(int(ms) for ms in lat)

        def q(p: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None
        return {"syncs": self.syncs, "reports_sent": self.reports_sent,
                "redirects": self.redirects, "errors": self.errors,
                "sync_p50_ms": q(0.5), "sync_p99_ms": q(0.99),
                "sync_max_ms": round(lat[-1], 2) if lat else None,
                "latency_hist_ms": {str(k): v for k, v in sorted(hist.items())},
                "answer_bytes": self.answer_bytes, "max_answer_bytes": self.max_answer_bytes,
                "idle_answers": self.idle_answers, "idle_answer_bytes": self.idle_answer_bytes,
                "max_heartbeat_gap_s": round(self.max_gap_s, 3),
                "max_heartbeat_gap_node": self.max_gap_node,
                "max_between_syncs_s": round(self.max_between_s, 3),
                "between_syncs_over_1s": self.between_over_1s,
                "assignments_seen": self.assignments_seen, "running_acked": self.running_acked,
                "stopped_acked": self.stopped_acked, "last_seen_wall": self.last_seen_wall,
                "last_running_acked_wall": self.last_running_acked_wall}


class SimNode:
    def __init__(self, name: str, cpu: float, memory_mb: int, controllers: list[str],
                 start: int, wait_s: float | None, stats: Stats, pids: itertools.count[int],
                 delta: bool = True, backoff_max_s: float = 0.0) -> None:
        self.node = {"name": name, "cpu": cpu, "memory_mb": memory_mb, "address": "",
                     "labels": {}, "attributes": {}}
        self.controllers = controllers
        self.current = controllers[start % len(controllers)]
        self.rotation = start % len(controllers)
        self.wait_s = wait_s  # None: as the leader asks (`poll_s`)
        self.poll_s = 1.0  # a leader that does not say
        # 0: a failed sync is retried after RETRY_PAUSE_S; above 0 the pause doubles up to
        # this, with jitter, and is back to RETRY_PAUSE_S after a success (as the agent's)
        self.backoff_max_s = backoff_max_s
        self.pause = RETRY_PAUSE_S
        self.stats = stats
        self.pids = pids
        self.index = 0
        self.highest_term = 0
        # alloc id -> the state this node has had acknowledged for it
        self.reported: dict[str, str] = {}
        self.fake_pid: dict[str, int] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self.last_ok: float | None = None  # gaps count from the first successful sync
        self.last_answer: float | None = None  # any answer, also an error
        self.fingerprint: Any = None
        # Speaks the delta protocol as the agent does (False: full answers, as old agents)
        self.held = HeldAssignments() if delta else None

    def _next_controller(self) -> None:
        if self.current in self.controllers:
            self.rotation = self.controllers.index(self.current)
        self.rotation = (self.rotation + 1) % len(self.controllers)
        self.current = self.controllers[self.rotation]

    def _report(self, alloc_id: str, state: str) -> dict[str, Any]:
        pid = None
        if state == "running":
            pid = self.fake_pid.setdefault(alloc_id, next(self.pids))
        return {"id": alloc_id, "state": state, "pid": pid, "restarts": 0,
                "exit_code": None if state == "running" else 0, "signal": None,
                "message": "", "health": None, "reason": None}

    def _reconcile(self, allocations: list[dict[str, Any]]) -> None:
        now = time.time()
        live = set()
        for a in allocations:
            alloc_id = a["id"]
            live.add(alloc_id)
            want = "running" if a["desired"] == "run" else "stopped"
            if alloc_id in self.pending:
                continue
            if self.reported.get(alloc_id) == want:
                continue
            if alloc_id not in self.reported and want == "running":
                self.stats.assignments_seen += 1
                self.stats.last_seen_wall = now
            self.pending[alloc_id] = self._report(alloc_id, want)
        for alloc_id in list(self.reported):
            if alloc_id not in live and alloc_id not in self.pending:
                del self.reported[alloc_id]
                self.fake_pid.pop(alloc_id, None)

    async def run(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        while not stop.is_set():
            sent = dict(self.pending)
            wait_s = 0.0 if sent else (self.wait_s if self.wait_s is not None else self.poll_s)
            body: dict[str, Any] = {"node": self.node, "reports": list(sent.values()),
                                    "index": self.index, "wait_s": wait_s,
                                    "term": self.highest_term,
                                    # as the agent sends it: without it a full-answer poll
                                    # would return at once instead of waiting for a change
                                    "fingerprint": self.fingerprint,
                                    "busy": {"reporting": len(sent)}}
            if self.held is not None:
                body["delta"] = self.held.request()
            t0 = time.monotonic()
            if self.last_answer is not None:
                between = t0 - self.last_answer
                if between > 1.0:
                    self.stats.between_over_1s += 1
                if between > self.stats.max_between_s:
                    self.stats.max_between_s = between
            try:
                async with session.post(f"{self.current}/v1/agent/sync", json=body,
                                        timeout=aiohttp.ClientTimeout(
                                            total=wait_s + 10.0, sock_connect=1.0)) as resp:
                    status = resp.status
                    raw = await resp.read()
                    self.last_answer = time.monotonic()
                    self.stats.answer_bytes += len(raw)
                    self.stats.max_answer_bytes = max(self.stats.max_answer_bytes, len(raw))
                    data = json.loads(raw)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.last_answer = time.monotonic()
                self.stats.error(type(exc).__name__)
                self._next_controller()
                await self._retry_pause(stop)
                continue
            if status != 200:
                err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
                leader_api = err.get("leader_api")
                if err.get("code") == "not_leader" and leader_api and leader_api != self.current:
                    self.stats.redirects += 1
                    self.current = leader_api.rstrip("/")
                    continue
                self.stats.error(f"http_{status}:{err.get('code')}")
                self._next_controller()
                await self._retry_pause(stop)
                continue
            term = int(data["term"])
            if term < self.highest_term:
                self.stats.error("stale_term")
                self._next_controller()
                continue
            allocations = list(data.get("allocations") or [])
            if data.get("fingerprint") == self.fingerprint:
                # nothing changed for the node: what a heartbeat costs, full or delta
                self.stats.idle_answers += 1
                self.stats.idle_answer_bytes += len(raw)
            self.fingerprint = data.get("fingerprint")
            if isinstance(data.get("poll_s"), int | float):
                self.poll_s = float(data["poll_s"])
            if self.held is not None and "delta" in data:
                merged = self.held.apply(int(data["index"]), allocations, data["delta"])
                if merged is None:
                    self.stats.error("delta_refused")
                    continue
                allocations = merged
            now = time.monotonic()
            self.pause = RETRY_PAUSE_S
            self.stats.syncs += 1
            self.stats.latencies_ms.append((now - t0) * 1000)
            gap = 0.0 if self.last_ok is None else now - self.last_ok
            if gap > self.stats.max_gap_s:
                self.stats.max_gap_s = gap
                self.stats.max_gap_node = str(self.node["name"])
            self.last_ok = now
            self.highest_term = term
            self.index = int(data["index"])
            if data.get("acked"):
                self.stats.reports_sent += len(sent)
                for alloc_id, rep in sent.items():
                    self.reported[alloc_id] = rep["state"]
                    if self.pending.get(alloc_id) is rep:
                        del self.pending[alloc_id]
                    if rep["state"] == "running":
                        self.stats.running_acked += 1
                        self.stats.last_running_acked_wall = time.time()
                    else:
                        self.stats.stopped_acked += 1
            self._reconcile(allocations)


    async def _retry_pause(self, stop: asyncio.Event) -> None:
        if self.backoff_max_s <= 0:
            await _sleep_or_stop(stop, RETRY_PAUSE_S)
            return
        await _sleep_or_stop(stop, self.pause * random.uniform(0.5, 1.0))
        self.pause = min(self.backoff_max_s, self.pause * 2)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    token = (args.token if args.token is not None
             else Path(args.token_file).read_text().strip())
    controllers = [c.strip().rstrip("/") for c in args.controllers.split(",") if c.strip()]
    stats = Stats()
    pids = itertools.count(FAKE_PID_BASE)
    nodes = [SimNode(f"{args.prefix}{i:04d}", args.cpu, args.memory_mb, controllers, i,
                     args.wait_s, stats, pids, not args.full, args.backoff_max_s)
             for i in range(args.first, args.first + args.nodes)]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: _print(stats.summary()))
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector,
                                     headers={"Authorization": f"Bearer {token}"}) as session:
        tasks = []
        for n in nodes:
            tasks.append(asyncio.create_task(n.run(session, stop)))
            await asyncio.sleep(args.stagger_s)  # spread the first registrations a little
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out = stats.summary()
    out["nodes"] = args.nodes
    return out


def _print(out: dict[str, Any]) -> None:
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--controllers", required=True, help="comma-separated API base URLs")
    tok = p.add_mutually_exclusive_group(required=True)
    tok.add_argument("--token-file")
    tok.add_argument("--token")
    p.add_argument("--nodes", type=int, default=200)
    p.add_argument("--first", type=int, default=0,
                   help="number of the first node (default 0): several processes can share "
                        "the nodes of one benchmark")
    p.add_argument("--prefix", default="sim-")
    p.add_argument("--cpu", type=float, default=8.0)
    p.add_argument("--memory-mb", type=int, default=32000, dest="memory_mb")
    p.add_argument("--wait-s", type=float, default=None, dest="wait_s",
                   help="long-poll seconds when there is nothing to report (default: as "
                        "the leader asks, as the agent does)")
    p.add_argument("--stagger-s", type=float, default=0.005, dest="stagger_s",
                   help="pause between starting two nodes (default 0.005)")
    p.add_argument("--backoff-max-s", type=float, default=2.0, dest="backoff_max_s",
                   help="retry failed syncs with a doubling, jittered pause up to this "
                        "(default 2, as the agent does; 0: a fixed 0.1 s)")
    p.add_argument("--full", action="store_true",
                   help="ask for full answers (as agents before the delta protocol)")
    args = p.parse_args()
    _print(asyncio.run(amain(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
