"""`no_leader` sent by a replica itself while it knows no leader (`alerts/leaderless.py`),
through the real runner to a real HTTP receiver: signed, retried, resolved once a leader
is back, with ids every replica derives alike; and the log's own record not sent again."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import aiohttp

from hacontrol.alerts.leaderless import LeaderlessWatch
from hacontrol.alerts.runner import AlertRunner
from hacontrol.health.view import ReplicaRow
from hacontrol.model.alerts import parse_rule
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C

from .test_alert_runner import SECRET, Clock, Log, Receiver, receiving, until


def test_the_watch_fires_after_the_threshold_and_resolves_with_a_leader() -> None:
    rule = parse_rule("nl", {"when": "no_leader", "threshold": 2,
                             "sinks": [{"type": "webhook", "url": "http://x/h"}]})
    a, b = LeaderlessWatch("c1"), LeaderlessWatch("c2")
    for w in (a, b):
        assert w.observe(0.0, 100.0, "c3", 7, [rule]) == []
        assert w.observe(1.0, 101.0, None, 7, [rule]) == []
        assert w.observe(2.9, 102.9, None, 9, [rule]) == []  # 1.9 s: not yet
    fired_a = a.observe(3.5, 103.5, None, 9, [rule])
    fired_b = b.observe(3.2, 103.2, None, 11, [rule])
    # The same id on both (the last leader's term), each saying what it saw.
    assert [n.id for n in fired_a] == [n.id for n in fired_b] == ["nl-leaderless-7"]
    assert fired_a[0].body["details"] == {"leaderless_s": 2.5, "last_leader": "c3",
                                          "last_term": 7, "replica": "c1"}
    assert a.observe(9.0, 109.0, None, 13, [rule]) == []  # once per episode
    resolved = a.observe(10.0, 110.0, "c2", 13, [rule])
    assert [(n.id, n.status) for n in resolved] == [("nl-leaderless-7-resolved", "resolved")]
    assert resolved[0].body["details"]["leaderless_s"] == 9.0
    assert a.observe(11.0, 111.0, "c2", 13, [rule]) == []
    # A rule whose threshold is not reached never fires; a replica that never knew a
    # leader uses the term it started in.
    c = LeaderlessWatch("c1")
    assert c.observe(0.0, 0.0, None, 4, [rule]) == []
    assert [n.id for n in c.observe(2.5, 2.5, None, 6, [rule])] == ["nl-leaderless-4"]


def test_a_replica_without_a_leader_sends_no_leader_itself_and_resolves_it() -> None:
    async def go() -> None:
        clock = Clock()
        log = Log(clock)
        async with receiving(Receiver(fail_first=1)) as rx, aiohttp.ClientSession() as s:
            rx.hold.set()
            await log.propose(C.ALERT_PUT, {"name": "nl", "rule": {
                "when": "no_leader", "threshold": 2, "window_s": 5, "sinks": [
                    {"type": "webhook", "url": rx.url, "secret": SECRET}]}})
            leader: list[str | None] = ["c2"]
            term = [3]
            # A follower: it never leads here (Leadership says no term of its own).
            runner = AlertRunner(log, Leadership(lambda: None, clock=clock),
                                 lambda: [ReplicaRow("c1", True, 0)], lambda: leader[0],
                                 clock=clock, mono=clock, rand=lambda: 0.0,
                                 term=lambda: term[0], me="c1")

            async def step() -> None:
                await runner.step(s)
                clock.now += 0.25
            for _ in range(4):
                await step()
            assert rx.got == []
            leader[0], term[0] = None, 4
            await until(lambda: len(rx.got) == 1, step, "the first attempt")
            assert clock.now - 1_000_001.0 >= 2.0  # not before the threshold
            await until(lambda: len(rx.got) == 2, step, "the retry after a 500")
            raw = rx.got[1][1]
            assert rx.got[1][2] == "sha256=" + hmac.new(SECRET.encode(), raw,
                                                        hashlib.sha256).hexdigest()
            body = json.loads(raw)
            assert (body["id"], body["status"], body["when"]) == (
                "nl-leaderless-3", "firing", "no_leader")
            assert body["details"]["replica"] == "c1" and body["details"]["last_leader"] == "c2"
            for _ in range(20):
                await step()
            assert len(rx.got) == 2  # delivered: not again
            assert log.m.store.alert_states["nl"].notifications == []  # not in the log
            leader[0], term[0] = "c3", 6
            await until(lambda: len(rx.got) == 3, step, "resolved")
            assert json.loads(rx.got[2][1])["id"] == "nl-leaderless-3-resolved"
            assert json.loads(rx.got[2][1])["status"] == "resolved"
            for _ in range(20):
                await step()
            assert rx.unique == ["nl-leaderless-3", "nl-leaderless-3-resolved"]
    asyncio.run(go())


def test_the_new_leader_records_the_episode_without_sending_it_again() -> None:
    async def go() -> None:
        clock = Clock()
        log = Log(clock)
        async with receiving(Receiver()) as rx, aiohttp.ClientSession() as s:
            rx.hold.set()
            await log.propose(C.ALERT_PUT, {"name": "nl", "rule": {
                "when": "no_leader", "threshold": 2, "window_s": 3, "sinks": [
                    {"type": "webhook", "url": rx.url}]}})
            leading: list[int | None] = [None]
            leader: list[str | None] = ["c2"]
            runner = AlertRunner(log, Leadership(lambda: leading[0], clock=clock),
                                 lambda: [ReplicaRow("c1", True, 0)], lambda: leader[0],
                                 clock=clock, mono=clock, rand=lambda: 0.0,
                                 term=lambda: leading[0] or 1, me="c1")

            async def step() -> None:
                await runner.step(s)
                clock.now += 0.25
            await step()
            leader[0] = None
            await until(lambda: len(rx.got) == 1, step, "sent by the replica")
            leader[0], leading[0] = "c1", 5  # this replica is elected

            def recorded() -> bool:
                state = log.m.store.alert_states["nl"]
                return [(n.status, [str(d.status) for d in n.deliveries])
                        for n in state.notifications] == [
                    ("firing", ["delivered"]), ("resolved", ["delivered"])]
            await until(recorded, step, "the episode recorded in the log, then resolved")
            assert rx.unique == ["nl-leaderless-1", "nl-leaderless-1-resolved"]
            assert len(rx.got) == 2
    asyncio.run(go())


def test_a_follower_hears_its_leader_only_if_it_answers_as_leader() -> None:
    """`wiring.leader_prober` over real HTTP: the named leader answering as leader is heard;
    one answering as follower, or not at all (a dead leader a follower left alone keeps
    naming), is not; a leader hears itself without asking."""
    from types import SimpleNamespace
    from typing import Any, cast

    from aiohttp import web

    from hacontrol.alerts.wiring import leader_prober

    async def go() -> None:
        answer: dict[str, Any] = {"id": "c2", "role": "leader"}

        async def status(_: web.Request) -> web.Response:
            return web.json_response(answer)
        app = web.Application()
        app.router.add_get("/v1/status", status)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        api = f"http://127.0.0.1:{runner.addresses[0][1]}"
        st: dict[str, Any] = {"role": "follower", "leader": "c2", "leader_api": api}
        ctl = SimpleNamespace(status=lambda: st,
                              versions=SimpleNamespace(tls=None, server_name=None))
        heard = leader_prober(cast(Any, ctl))
        try:
            async with aiohttp.ClientSession() as s:
                assert await heard(s) == "c2"
                answer["role"] = "follower"
                assert await heard(s) is None
                answer.update(role="leader", id="c3")  # another replica leads there now
                assert await heard(s) is None
                await runner.cleanup()  # the leader is gone
                answer.update(id="c2")
                assert await heard(s) is None
                st.update(role="leader", leader="c1", leader_api="http://127.0.0.1:9")
                assert await heard(s) == "c1"
                st.update(role="candidate", leader=None, leader_api=None)
                assert await heard(s) is None
        finally:
            await runner.cleanup()
    asyncio.run(go())
