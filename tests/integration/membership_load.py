"""Helpers for membership tests: continuous client writes, and replicas that join.

`Load` runs client threads that write without pause. Each write picks a replica from the
members the cluster itself lists in `/v1/status` (refreshed as it changes), and is retried
with one Idempotency-Key after a 503 or a lost connection, as the CLI does; it counts as
failed if anything else comes back, or if it is not acknowledged within `limit_s`.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.integration.harness import Cluster, Proc, Replica, free_ports, http, wait_for

ACK_LIMIT_S = 5.0
# One attempt waits this long before the write is retried elsewhere with the same key.
ATTEMPT_S = 2.0


@dataclass
class Load:
    cluster: Cluster
    workers: int = 3
    limit_s: float = ACK_LIMIT_S
    jobs: int = 20  # job names written over and over
    acks: list[tuple[float, float]] = field(default_factory=list)  # (sent, acknowledged)
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _apis: list[str] = field(default_factory=list)

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._apis = [r.api for r in self.cluster.live()]
        for w in range(self.workers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self._threads.append(t)
        refresher = threading.Thread(target=self._refresh, daemon=True)
        refresher.start()
        self._threads.append(refresher)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.limit_s + 5)

    def _refresh(self) -> None:
        """Learn the members from /v1/status, as clients and agents do."""
        while not self._stop.wait(0.2):
            for api in list(self._apis):
                try:
                    st = http("GET", f"{api}/v1/status", timeout=1,
                              context=self.cluster.client_tls).body
                except OSError:
                    continue
                if isinstance(st, dict) and st.get("member") and st.get("leader"):
                    apis = [m["api"] for m in st["members"] if m.get("api")]
                    if apis:
                        self._apis = apis
                    break

    def _run(self, worker: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            name = f"load-{worker}-{seq % self.jobs}"
            body = {"command": ["sleep", str(seq)], "count": 0,
                    "resources": {"cpu": 0.1, "memory_mb": 16}}
            self._write(f"/v1/jobs/default/{name}", body, worker + seq)

    def _write(self, path: str, body: Any, start: int) -> None:
        key = uuid.uuid4().hex
        sent = time.monotonic()
        attempt = 0
        tries: list[str] = []
        while True:
            apis = self._apis
            api = apis[(start + attempt) % len(apis)]
            attempt += 1
            remaining = self.limit_s - (time.monotonic() - sent)
            if remaining <= 0:
                self._fail(f"PUT {path} sent at +{sent - self.started:.2f} s: not "
                           f"acknowledged within {self.limit_s} s: {tries}")
                return
            try:
                resp = http("PUT", f"{api}{path}", body, token=self.cluster.token,
                            headers={"Idempotency-Key": key}, context=self.cluster.client_tls,
                            timeout=min(max(remaining, 0.1), ATTEMPT_S))
            except OSError as exc:
                tries.append(f"+{time.monotonic() - sent:.2f} {api[-5:]} {exc}")
                self._retried()
                time.sleep(0.02)
                continue
            if resp.status == 200:
                with self._lock:
                    self.acks.append((sent, time.monotonic()))
                return
            if resp.status == 503:
                tries.append(f"+{time.monotonic() - sent:.2f} {api[-5:]} 503 "
                             f"{resp.body.get('error', {}).get('message', '')[:60]}")
                self._retried()
                time.sleep(0.02)
                continue
            self._fail(f"PUT {path} at {api}: HTTP {resp.status} {resp.body}")
            return

    def _retried(self) -> None:
        with self._lock:
            self.retries += 1

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def pause_in(self, start: float, end: float) -> float:
        """The longest time no write was acknowledged, or one waited, within [start, end]."""
        with self._lock:
            acks = sorted(self.acks, key=lambda a: a[1])
        inside = [a for a in acks if a[1] >= start and a[0] <= end]
        longest = max((done - sent for sent, done in inside), default=end - start)
        times = [start] + [done for _s, done in inside if start <= done <= end] + [end]
        gaps = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
        return max(longest, gaps)

    def count_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for _s, done in self.acks if start <= done <= end)


def new_replica(c: Cluster, rid: str, join: list[Replica]) -> Replica:
    """A replica started with --join, added to `c.replicas` (not waited for)."""
    raft_port, api_port = free_ports(2)
    argv = [sys.executable, "-m", "hacontrol", "server", "--id", rid,
            "--data-dir", str(c.root / rid), "--raft", f"127.0.0.1:{raft_port}",
            "--api", f"127.0.0.1:{api_port}", "--join", ",".join(r.api for r in join),
            "--secret-file", str(c.root / "secret"), "--token-file", str(c.root / "token"),
            *c.tls_args("server"), *c.extra_server_args]
    r = Replica(rid, raft_port, api_port, Proc(rid, argv, c.root / f"{rid}.log"),
                "https" if c.tls else "http")
    r.proc.start()
    c.replicas.append(r)
    return r


def peers(c: Cluster, via: Replica | None = None) -> dict[str, dict[str, Any]]:
    """The leader's table of members, by id (following its redirect)."""
    def ask() -> dict[str, dict[str, Any]] | None:
        for r in ([via] if via else c.live()):
            try:
                resp = c.api("GET", "/v1/operator/raft/peers", replica=r, timeout=3)
            except OSError:
                continue
            if resp.status == 307:
                loc = resp.headers.get("Location", "")
                try:
                    resp = http("GET", loc, token=c.token, timeout=3, context=c.client_tls)
                except OSError:
                    continue
            if resp.status == 200:
                return {p["id"]: p for p in resp.body["peers"]}
        return None
    return wait_for(ask, 15, what="the leader's peer table")


def wait_member_ready(c: Cluster, r: Replica, timeout: float = 60.0) -> None:
    """Until the replica is ready and its join was answered (it logs that)."""
    wait_for(lambda: http("GET", f"{r.api}/v1/health/ready", timeout=2,
                          context=c.client_tls).status == 200, timeout, what=f"{r.id} ready")
    log = c.root / f"{r.id}.log"
    if "--join" in r.proc.argv:
        wait_for(lambda: "joined the cluster" in log.read_text(), timeout,
                 what=f"{r.id}'s join answered")


def remove(c: Cluster, rid: str, force: bool = False) -> Any:
    """DELETE the member through any live replica, following redirects to the leader."""
    q = "?force=true" if force else ""
    deadline = time.monotonic() + 20
    last: Any = None
    while time.monotonic() < deadline:
        for r in c.live():
            url = f"{r.api}/v1/operator/raft/peers/{rid}{q}"
            for _ in range(4):
                try:
                    last = http("DELETE", url, token=c.token, timeout=15, context=c.client_tls)
                except OSError:
                    break
                if last.status == 307:
                    url = last.headers.get("Location", url)
                    continue
                break
            busy = (last is not None and last.status == 409
                    and last.body["error"].get("reason") == "change_in_progress")
            if last is not None and last.status in (200, 409, 404) and not busy:
                return last
        time.sleep(0.1)
    raise AssertionError(f"remove {rid}: {last}")
