"""Concurrent clients: random writes and reads against random replicas, all recorded.

Each namespace is one linearizability key: its quota and its jobs live in one model state,
because a quota decision depends on every job in the namespace. Writes carry idempotency
keys; a write whose answer is uncertain is retried under the same key (on any replica) until
its deadline, and recorded as unknown only if no retry gave a definite answer.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .history import FAIL, OK, UNKNOWN, History, Op

JOB_CPU = 0.01
JOB_MEMORY_MB = 1


@dataclass
class WorkloadConfig:
    clients: int = 8
    namespaces: int = 3
    jobs_per_namespace: int = 2
    max_count: int = 4
    max_quota: int = 8
    op_timeout_s: float = 6.0
    request_timeout_s: float = 2.0
    # Fractions of each operation; reads are what make a stale replica visible.
    mix: tuple[tuple[str, float], ...] = (("put_job", 0.25), ("scale", 0.2), ("delete", 0.05),
                                          ("put_quota", 0.1), ("read_job", 0.25),
                                          ("read_ns", 0.15))


def job_spec(spec_id: int, count: int) -> dict[str, Any]:
    return {"command": ["sleep", "3600"], "env": {"S": str(spec_id)}, "count": count,
            "resources": {"cpu": JOB_CPU, "memory_mb": JOB_MEMORY_MB},
            "restart": {"policy": "never"}}


class Workload:
    def __init__(self, urls: dict[str, str], token: str, history: History,
                 cfg: WorkloadConfig, seed: int, t0: float) -> None:
        self.urls = urls  # replica name -> API URL
        self.names = sorted(urls)
        self.token = token
        self.history = history
        self.cfg = cfg
        self.rng = random.Random(seed)
        self.t0 = t0
        self.next_id = 0
        self.spec_seq = 0
        self._session: aiohttp.ClientSession | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add_replica(self, name: str, url: str | None) -> None:
        """A replica joined (and caught up): clients use it from now on."""
        if url:
            self.urls[name] = url
            self.names = sorted({*self.names, name})

    def drop_replica(self, name: str) -> None:
        """A replica was removed: no new request goes there (its URL stays known, so an
        attempt already choosing it fails like one to a dead replica)."""
        self.names = [n for n in self.names if n != name]

    @property
    def namespaces(self) -> list[str]:
        return [f"ns{i}" for i in range(self.cfg.namespaces)]

    def jobs(self) -> list[str]:
        return [f"j{i}" for i in range(self.cfg.jobs_per_namespace)]

    # ---------------------------------------------------------------- plumbing

    async def __aenter__(self) -> Workload:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(limit=0, force_close=False))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, replica: str, method: str, path: str, body: Any = None,
                      idem: str | None = None) -> tuple[int, Any]:
        assert self._session is not None
        headers = {"Idempotency-Key": idem} if idem else {}
        timeout = aiohttp.ClientTimeout(total=self.cfg.request_timeout_s)
        async with self._session.request(method, self.urls[replica] + path, json=body,
                                         headers=headers, timeout=timeout) as resp:
            return resp.status, await resp.json(content_type=None)

    # ------------------------------------------------------------- operations

    def new_op(self, client: int) -> tuple[Op, str, str, Any]:
        """Pick an operation; returns it with its HTTP method, path and body."""
        rng = self.rng
        f = rng.choices([m[0] for m in self.cfg.mix], [m[1] for m in self.cfg.mix])[0]
        ns = rng.choice(self.namespaces)
        job = rng.choice(self.jobs())
        self.next_id += 1
        op = Op(id=self.next_id, client=client, f=f, key=ns, input={}, invoke=0.0)
        if f == "put_job":
            self.spec_seq += 1
            # Mostly new specs (new versions), sometimes a repeat (an idempotent no-op).
            spec_id = self.spec_seq if rng.random() < 0.8 else rng.randint(0, 2)
            count = rng.randint(0, self.cfg.max_count)
            op.input = {"job": job, "spec": spec_id, "count": count}
            return op, "PUT", f"/v1/jobs/{ns}/{job}", job_spec(spec_id, count)
        if f == "scale":
            count = rng.randint(0, self.cfg.max_count)
            op.input = {"job": job, "count": count}
            return op, "POST", f"/v1/jobs/{ns}/{job}/scale", {"count": count}
        if f == "delete":
            op.input = {"job": job}
            return op, "DELETE", f"/v1/jobs/{ns}/{job}", None
        if f == "put_quota":
            q = rng.randint(0, self.cfg.max_quota)
            op.input = {"quota": q}
            return op, "PUT", f"/v1/namespaces/{ns}", {"quota": {"processes": q}}
        if f == "read_job":
            op.input = {"job": job}
            return op, "GET", f"/v1/jobs/{ns}/{job}", None
        op.input = {}
        return op, "GET", f"/v1/namespaces/{ns}", None

    @staticmethod
    def interpret(op: Op, status: int, body: Any) -> tuple[str, Any] | None:
        """(status, output) for a definite answer; None when the outcome is uncertain."""
        err = body.get("error") if isinstance(body, dict) else None
        if status == 200:
            if op.f in ("put_job", "scale"):
                j = body["job"]
                return OK, {"version": j["version"], "count": j["count"]}
            if op.f in ("delete", "put_quota"):
                return OK, "ok"
            if op.f == "read_job":
                j = body["job"]
                return OK, {"exists": True, "version": j["version"], "count": j["count"],
                            "spec": int(j["env"].get("S", -1))}
            ns = body["namespace"]
            return OK, {"quota": ns["quota"]["processes"], "usage": ns["usage"]["processes"]}
        code = (err or {}).get("code")
        if status == 404 and code == "not_found":
            if op.f == "read_ns":
                return OK, {"quota": None, "usage": 0, "missing": True}
            if op.f == "read_job":
                return OK, {"exists": False}
            return OK, "not_found"
        if status == 409 and code == "quota_exceeded":
            return OK, "quota_exceeded"
        if status == 503 and (err or {}).get("outcome") == "not_applied":
            return FAIL, None
        if status in (400, 401, 403, 405, 413, 422):
            return FAIL, f"HTTP {status}: {err}"
        return None  # 503 unknown, 5xx, anything else: uncertain

    def burst_op(self, client: int, i: int) -> tuple[Op, str, str, Any]:
        """A burst write on a key of its own: as much load on the log as any write, but
        without piling hundreds of concurrent operations onto one key, which would make the
        linearizability search explode without testing anything more."""
        self.next_id += 1
        ns = f"burst{i % 400}"
        q = self.rng.randint(0, self.cfg.max_quota)
        op = Op(id=self.next_id, client=client, f="put_quota", key=ns, input={"quota": q},
                invoke=0.0)
        return op, "PUT", f"/v1/namespaces/{ns}", {"quota": {"processes": q}}

    async def perform(self, client: int, burst: int | None = None) -> None:
        op, method, path, body = (self.new_op(client) if burst is None
                                  else self.burst_op(client, burst))
        is_write = method != "GET"
        op.idem = uuid.uuid4().hex if is_write else None
        op.replica = self.rng.choice(self.names)
        op.invoke = self.now()
        self.history.ops.append(op)
        deadline = time.monotonic() + self.cfg.op_timeout_s
        replica = op.replica
        while True:
            op.replicas.append(replica)
            try:
                status, resp = await self.request(replica, method, path, body, op.idem)
                verdict = self.interpret(op, status, resp)
                if verdict is not None:
                    op.status, op.output = verdict
                    op.complete = self.now()
                    return
                op.error = f"HTTP {status}"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                op.error = type(exc).__name__
            if not is_write:
                # A read without an answer had no effect; nothing to retry for.
                op.status, op.complete = FAIL, self.now()
                return
            if time.monotonic() > deadline:
                op.status = UNKNOWN  # complete stays None: it may take effect any time later
                return
            await asyncio.sleep(0.05)
            replica = self.rng.choice(self.names)

    async def client(self, n: int, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.perform(n)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.client(i, stop) for i in range(self.cfg.clients)))

    async def burst(self, n: int, concurrency: int = 200,
                    on_done: Callable[[], None] | None = None) -> None:
        """Thousands of writes in flight at once: the load where pysyncobj has wedged."""
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await self.perform(1000 + i % concurrency, burst=i)
        await asyncio.gather(*(one(i) for i in range(n)))
        if on_done:
            on_done()

    async def setup_namespaces(self) -> None:
        """Create every namespace with no quota before the run, retrying until accepted."""
        for ns in self.namespaces:
            key = uuid.uuid4().hex
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, _ = await self.request(self.rng.choice(self.names), "PUT",
                                                   f"/v1/namespaces/{ns}",
                                                   {"quota": {"processes": None}}, key)
                    if status == 200:
                        break
                except (aiohttp.ClientError, TimeoutError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not create namespace {ns}")
                await asyncio.sleep(0.1)
