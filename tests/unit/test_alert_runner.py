"""The leader's alert loop against a real HTTP receiver and real commands, over one state
machine standing for the log: signed webhooks retried until delivered, exec sinks fed the
body on stdin, and a change of leader mid-delivery that neither loses nor repeats."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from hacontrol.alerts.runner import AlertRunner
from hacontrol.alerts.sinks import SIGNATURE_HEADER, run_command
from hacontrol.health.view import ReplicaRow
from hacontrol.model.errors import Rejection
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

T = TypeVar("T")
SECRET = "shh"
NODE = {"name": "n1", "cpu": 2.0, "memory_mb": 1024, "address": "http://127.0.0.1:1",
        "labels": {}, "attributes": {}}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Log:
    """One state machine, commands applied in order with the test's clock: what every
    replica's proposals come to."""

    def __init__(self, clock: Clock) -> None:
        self.m = StateMachine()
        self.index = 0
        self.clock = clock

    async def propose(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        self.index += 1
        res = self.m.apply(C.Command(op, self.clock(), args).encode(), self.index)
        if not res["ok"]:
            raise Rejection(res["error"]["code"], res["error"]["message"])
        return res

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        return fn(self.m)


@dataclass
class Receiver:
    """A webhook receiver: answers `fail_first` requests with 500, holds requests while
    `hold` is clear, and deduplicates by notification id as the docs advise."""

    fail_first: int = 0
    hold: asyncio.Event = field(default_factory=asyncio.Event)
    got: list[tuple[str, bytes, str]] = field(default_factory=list)  # (id, body, signature)
    url: str = ""

    @property
    def unique(self) -> list[str]:
        return list(dict.fromkeys(i for i, _, _ in self.got))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        self.got.append((json.loads(raw)["id"], raw, request.headers.get(SIGNATURE_HEADER, "")))
        await self.hold.wait()
        if len(self.got) <= self.fail_first:
            return web.Response(status=500)
        return web.Response(text="ok")


@asynccontextmanager
async def receiving(rx: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", rx.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rx.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield rx
    finally:
        rx.hold.set()
        await runner.cleanup()


def runner_for(log: Log, clock: Clock, term: list[int | None]) -> AlertRunner:
    leadership = Leadership(lambda: term[0], clock=clock)
    return AlertRunner(log, leadership, lambda: [ReplicaRow("c1", True, 0)], lambda: "c1",
                       clock=clock, mono=clock, rand=lambda: 0.0)


async def node_down(log: Log, rule: dict[str, Any]) -> None:
    await log.propose(C.ALERT_PUT, {"name": "down", "rule": rule})
    await log.propose(C.NODE_REGISTER, NODE)
    await log.propose(C.NODE_STATUS, {"name": "n1", "status": "down"})


async def until(cond: Callable[[], bool], step: Callable[[], Any], what: str,
                rounds: int = 400) -> None:
    for _ in range(rounds):
        if cond():
            return
        await step()
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


def deliveries(log: Log) -> list[dict[str, Any]]:
    state = log.m.store.alert_states["down"]
    return [d.to_dict() for n in state.notifications for d in n.deliveries]


def status_of(log: Log, i: int) -> str | None:
    ds = deliveries(log) if "down" in log.m.store.alert_states else []
    return ds[i]["status"] if i < len(ds) else None


def test_a_signed_webhook_is_retried_with_backoff_until_delivered() -> None:
    async def go() -> None:
        clock = Clock()
        log = Log(clock)
        async with receiving(Receiver(fail_first=2)) as rx, aiohttp.ClientSession() as s:
            rx.hold.set()
            await node_down(log, {"when": "node_down", "sinks": [
                {"type": "webhook", "url": rx.url, "secret": SECRET}]})
            runner = runner_for(log, clock, [1])

            async def step() -> None:
                await runner.step(s)
                clock.now += 0.3  # backoff: 1 s, then 2 s (no jitter here)
            await until(lambda: status_of(log, 0) == "delivered", step,
                        "delivered")
            assert len(rx.got) == 3 and rx.unique == ["down-1"]
            d = deliveries(log)[0]
            assert d["attempts"] == 3 and d["last_error"] is None
            for _, raw, signature in rx.got:
                want = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
                assert signature == f"sha256={want}"
            sent = json.loads(rx.got[0][1])
            assert {k: sent[k] for k in ("alert", "id", "status", "severity", "when")} == {
                "alert": "down", "id": "down-1", "status": "firing", "severity": "warning",
                "when": "node_down"}
            assert sent["details"] == {"nodes": ["n1"], "count": 1}
            assert rx.got[0][1] == rx.got[2][1]  # a retry sends the very same bytes
            # Nothing more is sent however long it runs.
            for _ in range(10):
                await step()
            assert len(rx.got) == 3
            # The node comes back: resolved, delivered once.
            await log.propose(C.NODE_STATUS, {"name": "n1", "status": "ready"})
            await until(lambda: status_of(log, 1) == "delivered", step, "resolved")
            assert rx.unique == ["down-1", "down-2"]
            assert json.loads(rx.got[-1][1])["status"] == "resolved"
    asyncio.run(go())


def test_a_new_leader_neither_loses_nor_floods() -> None:
    """The leader is cut off while its request is at the receiver (it never records the
    attempt); the next leader delivers the pending notification, and after that nobody
    sends it again."""
    async def go() -> None:
        clock = Clock()
        log = Log(clock)
        async with receiving(Receiver()) as rx, aiohttp.ClientSession() as s:
            await node_down(log, {"when": "node_down", "sinks": [
                {"type": "webhook", "url": rx.url}]})
            term: list[int | None] = [1]
            old = runner_for(log, clock, term)
            await old.step(s)  # fires and starts delivering; the receiver holds it
            await until(lambda: len(rx.got) == 1, lambda: asyncio.sleep(0), "the first request",
                        rounds=500)
            for task in list(old.tasks):  # the old leader dies mid-delivery
                task.cancel()
            await asyncio.gather(*old.tasks, return_exceptions=True)
            assert deliveries(log)[0]["attempts"] == 0  # nothing recorded
            rx.hold.set()
            term[0] = 2
            new = runner_for(log, clock, term)

            async def step() -> None:
                await new.step(s)
                clock.now += 0.3
            await until(lambda: status_of(log, 0) == "delivered", step,
                        "delivered by the new leader")
            for _ in range(20):
                await step()
            assert rx.unique == ["down-1"]
            assert len(rx.got) == 2  # at least once: the cut-off attempt, then one more
            assert len(log.m.store.alert_states["down"].notifications) == 1
            term[0] = None  # and a deposed leader sends nothing
            await old.step(s)
            assert len(rx.got) == 2
    asyncio.run(go())


def test_an_exec_sink_gets_the_body_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "body.json"

    async def go() -> None:
        clock = Clock()
        log = Log(clock)
        await node_down(log, {"when": "node_down", "severity": "critical", "sinks": [
            {"type": "exec", "command": [sys.executable, "-c",
                                         "import sys; open(sys.argv[1], 'wb').write("
                                         "sys.stdin.buffer.read())", str(out)]}]})
        runner = runner_for(log, clock, [1])
        async with aiohttp.ClientSession() as s:
            async def step() -> None:
                await runner.step(s)
            await until(lambda: status_of(log, 0) == "delivered", step,
                        "exec delivered")
    asyncio.run(go())
    sent = json.loads(out.read_bytes())
    assert sent["id"] == "down-1" and sent["severity"] == "critical"


def test_exec_failures_and_timeouts_are_reported() -> None:
    env: dict[str, str] = {}
    assert run_command((sys.executable, "-c", "pass"), b"{}", 5, env) is None
    failed = run_command((sys.executable, "-c", "import sys; sys.exit('nope')"), b"", 5, env)
    assert failed is not None and failed.startswith("exit status 1") and "nope" in failed
    late = run_command((sys.executable, "-c", "import time; time.sleep(30)"), b"", 0.3, env)
    assert late == "timed out after 0.3s"
    missing = run_command(("/nonexistent/program",), b"", 5, env)
    assert missing is not None and "FileNotFoundError" in missing
