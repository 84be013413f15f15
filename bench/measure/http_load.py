"""One HTTP client for every control plane: throughput, sequential latency, failover.

hacontrol's API and etcd's v3 JSON gateway are driven by the same aiohttp code with the
same keep-alive connections; a system only supplies how to build its request (`Make`),
so the client's own cost is the same on both sides.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from bench.measure.table import pct


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # appended to the endpoint's base URL
    body: bytes | None
    headers: Mapping[str, str]


# (client number, sequence number of that client's operation) -> the request. A retried
# operation keeps its sequence number, so a system can derive an idempotency key from it.
Make = Callable[[int, int], Request]
TIMEOUT = aiohttp.ClientTimeout(total=10)


async def _send(session: aiohttp.ClientSession, base: str, req: Request) -> int:
    async with session.request(req.method, base + req.path, data=req.body,
                               headers=dict(req.headers), timeout=TIMEOUT) as resp:
        await resp.read()
        return resp.status


async def send_all(base: str, reqs: Sequence[Request]) -> None:
    """Send `reqs` one after the other (setting up keys); every one must succeed."""
    async with aiohttp.ClientSession() as session:
        for req in reqs:
            status = await _send(session, base, req)
            if status != 200:
                raise RuntimeError(f"{req.method} {base}{req.path}: HTTP {status}")


# Called as the measured window opens; what it returns is called with the window's length
# as it closes, and its result is the answer's "meter" (for example CPU use meanwhile).
Meter = Callable[[], Callable[[float], Any]]


async def throughput(base: str, make: Make, clients: int, seconds: float,
                     warmup: float = 1.0, ssl: ssl_module.SSLContext | None = None,
                     meter: Meter | None = None) -> dict[str, Any]:
    """`clients` concurrent tasks, one keep-alive connection each, for `seconds` after a
    warm-up: successful operations per second and their latency."""
    counting = False
    stop = False
    ok = 0
    errors: dict[str, int] = {}
    lat: list[float] = []

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        nonlocal ok
        n = 0
        while not stop:
            n += 1
            t0 = time.perf_counter()
            try:
                status: int | str = await _send(session, base, make(w, n))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = type(exc).__name__
            if not counting:
                continue
            if status == 200:
                ok += 1
                lat.append((time.perf_counter() - t0) * 1000)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    connector = aiohttp.TCPConnector(limit=clients, ssl=ssl or True)
    metered: Any = None
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(worker(w, session)) for w in range(clients)]
        try:
            await asyncio.sleep(warmup)
            close_meter = meter() if meter is not None else None
            t0 = time.perf_counter()
            counting = True
            await asyncio.sleep(seconds)
            counting = False
            elapsed = time.perf_counter() - t0
            if close_meter is not None:
                metered = close_meter(elapsed)
            stop = True
            await asyncio.wait(tasks, timeout=15)
        finally:
            stop = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return {"ops_per_s": ok / elapsed, "ok": ok, "errors": errors,
            "p50_ms": pct(lat, 0.5) if lat else None, "p99_ms": pct(lat, 0.99) if lat else None,
            "clients": clients, "seconds": round(elapsed, 2), "meter": metered}


async def latency(base: str, make: Make, n: int, warm: int = 20) -> dict[str, Any]:
    """One client, one keep-alive connection, `n` sequential operations after `warm`."""
    lat: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for i in range(n + warm):
            t0 = time.perf_counter()
            try:
                status = await _send(session, base, make(0, i))
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            dt = (time.perf_counter() - t0) * 1000
            if status != 200:
                errors += 1
            elif i >= warm:
                lat.append(dt)
    if not lat:
        raise RuntimeError(f"latency against {base}: no operation succeeded")
    return {"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "n": len(lat), "errors": errors}


async def failover(bases: Sequence[str], make: Make, kill: Callable[[], None],
                   every_s: float = 0.005, max_in_flight: int = 300, warmup: float = 0.3,
                   limit: float = 20.0) -> float | None:
    """Seconds from `kill` (the leader's SIGKILL, synchronous) to the first success of a
    write sent after it; None when none came within `limit`.

    Open loop: a new independent write every `every_s`, to the endpoints in turn, each
    waiting for its own answer. A closed-loop client would measure its own strategy too:
    a write forwarded to the dead leader just before the followers noticed waits for the
    server's request timeout (etcd: 5 s + 2 election timeouts), and clients stuck on such
    writes send nothing new meanwhile."""
    kill_at: float | None = None
    first_ack: float | None = None
    acked_before = 0
    done = asyncio.Event()
    in_flight: set[asyncio.Task[None]] = set()
    bad: list[int] = []

    async def one(session: aiohttp.ClientSession, base: str, req: Request) -> None:
        nonlocal first_ack, acked_before
        sent = time.perf_counter()
        try:
            status = await _send(session, base, req)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return  # gone or unreachable: later writes go on meanwhile
        if status == 200:
            if kill_at is None:
                acked_before += 1
            elif sent >= kill_at and first_ack is None:
                first_ack = time.perf_counter()
                done.set()
        elif status < 500:
            bad.append(status)  # a client error is a bug in the benchmark: fail the trial

    async def sender(session: aiohttp.ClientSession) -> None:
        n = 0
        while not done.is_set():
            n += 1
            if len(in_flight) < max_in_flight:
                t = asyncio.create_task(one(session, bases[n % len(bases)], make(0, n)))
                in_flight.add(t)
                t.add_done_callback(in_flight.discard)
            await asyncio.sleep(every_s)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        task = asyncio.create_task(sender(session))
        try:
            await asyncio.sleep(warmup)
            settle = time.perf_counter() + 10.0
            while acked_before == 0 and time.perf_counter() < settle:
                await asyncio.sleep(0.01)
            if acked_before == 0:
                raise RuntimeError("no write acknowledged before the kill")
            kill_at = time.perf_counter()
            kill()
            try:
                await asyncio.wait_for(done.wait(), limit)
            except TimeoutError:
                pass
        finally:
            done.set()
            task.cancel()
            pending = [task, *in_flight]
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    if bad:
        raise RuntimeError(f"failover writes got HTTP {sorted(set(bad))}")
    return None if first_ack is None or kill_at is None else first_ack - kill_at
