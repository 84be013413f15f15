#!/usr/bin/env python3
"""What the metrics cost: the request-timing middleware and one scrape, in-process.

    python bench/metrics_overhead.py [--requests N] [--rounds R]

The same app (a real `build_app` over an in-memory state machine, tests/unit/api_fake.py)
answers `GET /v1/jobs/default/web` (one allocation) with and without the timing middleware, in alternating
rounds so that noise from other work on the machine falls on both; the figures are medians
of the per-request time over the rounds, and their difference. Then: the time of one
`/metrics` scrape of a state with 200 nodes and 2,000 reported allocations.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hacontrol.api.app import build_app  # noqa: E402
from hacontrol.api.metrics_routes import metrics_middleware  # noqa: E402
from hacontrol.observe.metrics import ServerMetrics  # noqa: E402
from hacontrol.scheduler.leader_state import Leadership  # noqa: E402
from hacontrol.state import commands as C  # noqa: E402
from tests.unit.api_fake import ApplyingReplica  # noqa: E402
from tests.unit.test_api_errors import TOKEN  # noqa: E402

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def replica(nodes: int, allocs: int) -> ApplyingReplica:
    r = ApplyingReplica()
    cmds = [(C.NODE_REGISTER, {"name": f"n{i}", "cpu": 8.0, "memory_mb": 32000,
                               "address": f"http://10.0.0.{i % 250}:1", "labels": {},
                               "attributes": {}}) for i in range(nodes)]
    cmds.append((C.JOB_PUT, {"namespace": "default", "name": "web",
                             "spec": {"command": ["sleep", "1"], "count": max(1, allocs),
                                      "resources": {"cpu": 0.01, "memory_mb": 1}}}))
    for op, args in cmds:
        r.index += 1
        assert r.m.apply(C.Command(op, time.time(), args).encode(), r.index)["ok"]
    return r


async def per_request(client: TestClient, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        resp = await client.get("/v1/jobs/default/web?stale=true", headers=AUTH)
        await resp.read()
    return (time.perf_counter() - start) / n


async def middleware_alone(app: web.Application, n: int, rounds: int) -> tuple[float, float]:
    """The middleware around a handler that does nothing, against that handler called
    directly: the middleware's own cost, free of the network's noise (medians, seconds)."""
    req = make_mocked_request("GET", "/v1/jobs/default/web", app=app)
    req._match_info = await app.router.resolve(req)  # as the server does before middlewares
    timed = metrics_middleware(ServerMetrics())
    response = web.Response()

    async def handler(_: web.Request) -> web.StreamResponse:
        return response
    bare_t, timed_t = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            await handler(req)
        bare_t.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        for _ in range(n):
            await timed(req, handler)
        timed_t.append((time.perf_counter() - start) / n)
    return statistics.median(bare_t), statistics.median(timed_t)


async def main(n: int, rounds: int) -> None:
    small = replica(1, 1)
    r = replica(200, 2000)
    leadership = Leadership(lambda: 3)
    state = leadership.current()
    assert state is not None
    for a in r.m.allocs:
        state.alloc_metrics[a] = {"cpu_percent": 3.0, "rss_bytes": 1 << 22, "threads": 1,
                                  "open_files": 4, "io_read_bytes": 1, "io_write_bytes": 2}
    timed = build_app(small, small, leadership, TOKEN)
    bare = build_app(small, small, leadership, TOKEN)
    scraped = build_app(r, r, leadership, TOKEN)
    bare.middlewares.pop(0)  # the timing middleware is the outermost
    with_m: list[float] = []
    without: list[float] = []
    async with TestClient(TestServer(timed)) as a, TestClient(TestServer(bare)) as b, \
            TestClient(TestServer(scraped)) as c:
        await per_request(a, 50)
        await per_request(b, 50)
        for i in range(rounds):  # the order alternates: neither side always goes first
            if i % 2:
                without.append(await per_request(b, n))
                with_m.append(await per_request(a, n))
            else:
                with_m.append(await per_request(a, n))
                without.append(await per_request(b, n))
        scrapes = []
        for _ in range(rounds):
            start = time.perf_counter()
            resp = await c.get("/metrics", headers=AUTH)
            body = await resp.read()
            scrapes.append(time.perf_counter() - start)
    w, wo = statistics.median(with_m), statistics.median(without)
    print(f"GET /v1/jobs/default/web, {rounds} rounds x {n} requests (medians):")
    print(f"  without the timing middleware {wo * 1e6:8.1f} us/request")
    print(f"  with the timing middleware    {w * 1e6:8.1f} us/request")
    print(f"  overhead                      {(w - wo) * 1e6:8.1f} us/request ({w / wo:.3f}x)")
    alone, with_mw = await middleware_alone(timed, 20_000, rounds)
    print(f"the middleware alone, around a handler that does nothing: "
          f"{(with_mw - alone) * 1e6:.1f} us/request")
    print(f"/metrics with 200 nodes, {len(state.alloc_metrics)} allocations: "
          f"{statistics.median(scrapes) * 1e3:.1f} ms, {len(body) // 1024} KiB")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    asyncio.run(main(args.requests, args.rounds))
