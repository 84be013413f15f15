"""Playing a release of an older protocol, and a client load that records every request.

A replica or agent "of the previous release" is the same code started with the testing
switches of `hacontrol/model/protocol.py` in its environment: it writes no version fields
(protocol 1) or reports that it does not know some command types.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from hacontrol.model.protocol import PRETEND_PROTOCOL_ENV, PRETEND_WITHOUT_OPS_ENV

from .harness import Cluster, Proc, Replica, Response, http, wait_for

OLD = {PRETEND_PROTOCOL_ENV: "1"}
ACK_WITHIN_S = 5.0  # the bound on a request, retries included
ATTEMPT_TIMEOUT_S = 2.0


def without_ops(*ops: str) -> dict[str, str]:
    return {PRETEND_WITHOUT_OPS_ENV: ",".join(ops)}


def start_with(proc: Proc, env: dict[str, str] | None = None) -> None:
    """Start (or restart) `proc` with `env` added to its environment (None: as it is)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in (PRETEND_PROTOCOL_ENV, PRETEND_WITHOUT_OPS_ENV)}
    with open(proc.log, "ab") as out:
        proc.popen = subprocess.Popen(proc.argv, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**clean, **(env or {})})


def ready(c: Cluster, r: Replica) -> bool:
    try:
        return http("GET", f"{r.api}/v1/health/ready", timeout=2,
                    context=c.client_tls).status == 200
    except OSError:
        return False


def restart_replica(c: Cluster, r: Replica, env: dict[str, str] | None = None) -> None:
    """One step of a rolling upgrade: stop it (SIGTERM), start it, wait until it is ready."""
    r.proc.stop()
    start_with(r.proc, env)
    wait_for(lambda: ready(c, r), 30, what=f"{r.id} ready after its restart")


def restart_order(c: Cluster) -> list[Replica]:
    """Followers first, the leader last: one election per rolling restart."""
    lead = c.leader()
    return [r for r in c.replicas if r is not lead] + [lead]


@dataclass
class Outcome:
    what: str
    status: int
    seconds: float
    attempts: int


@dataclass
class Load:
    """Client requests, one after another on each of `threads` threads, until stopped: a
    write (a namespace) then a read (a job). Each is retried as the CLI retries (the same
    Idempotency-Key, the next replica) after a 503 or a lost connection, and counts as failed
    unless it ends with an answer below 500 within `ACK_WITHIN_S`."""

    cluster: Cluster
    threads: int = 2
    outcomes: list[Outcome] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def request(self, method: str, path: str, body: Any = None) -> Outcome:
        key = uuid.uuid4().hex
        start = time.monotonic()
        replicas = list(self.cluster.replicas)
        attempt, last = 0, 0
        while time.monotonic() - start < ACK_WITHIN_S:
            r = replicas[attempt % len(replicas)]
            attempt += 1
            try:
                resp: Response = http(method, f"{r.api}{path}", body, token=self.cluster.token,
                                      headers={"Idempotency-Key": key},
                                      timeout=ATTEMPT_TIMEOUT_S,
                                      context=self.cluster.client_tls)
            except OSError:
                time.sleep(0.02)
                continue
            last = resp.status
            if resp.status < 500:
                break
            time.sleep(0.05)
        return Outcome(f"{method} {path}", last, time.monotonic() - start, attempt)

    def _run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            self.outcomes.append(self.request("PUT", f"/v1/namespaces/load-{n}-{i % 50}", {}))
            self.outcomes.append(self.request("GET", "/v1/jobs/default/web"))

    def __enter__(self) -> Load:
        for n in range(self.threads):
            t = threading.Thread(target=self._run, args=(n,), daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._workers:
            t.join(ACK_WITHIN_S * 2)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes
                if not 200 <= o.status < 300 or o.seconds > ACK_WITHIN_S]

    def summary(self) -> str:
        times = sorted(o.seconds for o in self.outcomes) or [0.0]
        retried = sum(1 for o in self.outcomes if o.attempts > 1)
        return (f"{len(self.outcomes)} requests, {len(self.failures())} failed, {retried} "
                f"retried, median {times[len(times) // 2] * 1000:.1f} ms, longest "
                f"{times[-1] * 1000:.0f} ms")
