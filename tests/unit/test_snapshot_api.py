"""`GET|PUT /v1/operator/snapshot` over real state machines: who may, and what a file
carries from one cluster to another."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api import snapshot_routes
from hacontrol.api.app import build_app
from hacontrol.api.limits import Limits
from hacontrol.api.snapshot_routes import MAX_FILE_BYTES
from hacontrol.controller.errors import OutcomeUnknown
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import backup
from hacontrol.state import commands as C

from .test_acl_api import SPEC, LocalReplica

Call = Callable[..., tuple[int, Any]]
PATH = "/v1/operator/snapshot"


def session(replica: LocalReplica, script: Callable[[Call], None],
            limits: Limits | None = None) -> None:
    """`call(method, path, body, token, headers)`; a bytes body is sent as it is, raw
    answers kept."""
    async def go() -> None:
        app: web.Application = build_app(replica, replica, Leadership(lambda: 3), "", limits)
        async with TestClient(TestServer(app)) as client:
            loop = asyncio.get_running_loop()

            async def one(method: str, path: str, body: Any, token: str | None,
                          more: dict[str, str]) -> tuple[int, Any]:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                headers.update(more)
                data = body if isinstance(body, bytes) or body is None else json.dumps(body)
                resp = await client.request(method, path, headers=headers, data=data)
                raw = await resp.read()
                if resp.content_type == "application/json":
                    return resp.status, json.loads(raw)
                return resp.status, raw

            def call(method: str, path: str, body: Any = None, token: str | None = None,
                     headers: dict[str, str] | None = None) -> tuple[int, Any]:
                return asyncio.run_coroutine_threadsafe(
                    one(method, path, body, token, headers or {}), loop).result()
            await loop.run_in_executor(None, script, call)
    asyncio.run(go())


def bootstrap(call: Call) -> str:
    status, body = call("POST", "/v1/acl/bootstrap")
    assert status == 200, body
    return str(body["token"]["secret_id"])


def client_token(call: Call, root: str, name: str, rules: dict[str, Any]) -> str:
    assert call("PUT", f"/v1/acl/policies/{name}", {"rules": rules}, root)[0] == 200
    status, body = call("POST", "/v1/acl/tokens", {"name": name, "policies": [name]}, root)
    assert status == 200, body
    return str(body["token"]["secret_id"])


def state_of(call: Call, token: str) -> dict[str, Any]:
    """Namespaces with quotas, and jobs with their versions, as the API shows them."""
    _, ns = call("GET", "/v1/namespaces", None, token)
    _, jobs = call("GET", "/v1/jobs", None, token)
    return {"namespaces": {n["name"]: n["quota"] for n in ns["namespaces"]},
            "jobs": {(j["namespace"], j["name"]): j["version"] for j in jobs["jobs"]}}


def test_save_then_restore_onto_another_cluster_and_weaker_tokens_are_refused() -> None:
    source, target = LocalReplica(), LocalReplica()
    saved: dict[str, Any] = {}

    def on_source(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/namespaces/team",
                    {"quota": {"cpu": 4, "memory_mb": 1024}}, root)[0] == 200
        for i in range(4):
            assert call("PUT", f"/v1/jobs/team/web{i}", SPEC, root)[0] == 200
        assert call("PUT", "/v1/jobs/team/web0", {**SPEC, "env": {"V": "2"}}, root)[0] == 200
        # Each of these may do much, but not everything a snapshot holds or replaces.
        for name, rules in (("ops", {"operator": "write"}), ("acl", {"acl": "write"}),
                            ("ns", {"namespaces": {"*": {"policy": "write"}},
                                    "node": "write"})):
            weak = client_token(call, root, name, rules)
            status, body = call("GET", PATH, None, weak)
            assert status == 403 and body["error"]["field"] == "Authorization", (name, body)
            assert call("PUT", PATH, b"x", weak)[0] == 403, name
        assert call("GET", PATH)[0] == 401
        status, data = call("GET", PATH, None, root)
        assert status == 200, data
        saved.update(file=data, root=root, state=state_of(call, root))

    session(source, on_source)
    found = backup.unpack(saved["file"])
    assert found.counts["jobs"] == 4 and found.counts["tokens"] == 4
    assert found.index == source.m.index and found.term == 3

    def on_target(call: Call) -> None:
        other = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/stray", SPEC, other)[0] == 200
        status, body = call("PUT", PATH, saved["file"], other)
        assert status == 200, body
        assert body["restored"]["jobs"] == 4 and body["snapshot"]["index"] == found.index
        # The tokens are the source's now: its root works, the target's own is gone.
        assert call("GET", "/v1/jobs", None, other)[0] == 403
        assert state_of(call, saved["root"]) == saved["state"]

    session(target, on_target)


def test_a_snapshot_over_this_clusters_caps_is_refused() -> None:
    source, small = LocalReplica(), LocalReplica()
    saved: dict[str, Any] = {}

    def on_source(call: Call) -> None:
        root = bootstrap(call)
        for i in range(3):
            assert call("PUT", f"/v1/jobs/default/web{i}", SPEC, root)[0] == 200
        saved["file"] = call("GET", PATH, None, root)[1]

    session(source, on_source)

    def on_small(call: Call) -> None:
        root = bootstrap(call)
        index = small.m.index
        status, body = call("PUT", PATH, saved["file"], root)
        assert status == 409 and body["error"]["field"] == "snapshot", body
        assert "--max-jobs" in body["error"]["message"]
        assert small.m.index == index

    session(small, on_small, Limits(max_jobs=2))


def test_a_damaged_or_oversized_file_is_refused_before_it_reaches_the_log() -> None:
    source = LocalReplica()
    saved: dict[str, Any] = {}

    def on_source(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        saved["file"] = call("GET", PATH, None, root)[1]
        flipped = bytearray(saved["file"])
        flipped[len(flipped) // 2] ^= 0x40
        index = source.m.index
        for bad, why in ((bytes(flipped), "checksum"), (saved["file"][:-10], "truncated"),
                         (b"{}", "magic")):
            status, body = call("PUT", PATH, bad, root)
            assert status == 422 and body["error"]["field"] == "snapshot", body
            assert why in body["error"]["message"]
        # A whole file (right checksum) around a state that is not one: every replica
        # refuses it as it applies, and nothing changes.
        forged = backup.pack(b"\x92\x01\x02", 5, 1, {}, created_at=0.0, source="x")
        status, body = call("PUT", PATH, forged, root)
        assert status == 422 and body["error"]["field"] == "state", body
        index = source.m.index
        status, body = call("PUT", PATH, b"\0" * (MAX_FILE_BYTES + 1), root)
        assert status == 413 and body["error"]["field"] == "body", body
        assert source.m.index == index  # nothing was written
        assert ("default", "web") in source.m.jobs

    session(source, on_source)


class SlowReplica(LocalReplica):
    """A restore waits for `release()`; `lose_answer` applies it and then says the outcome
    is unknown, as a write that outlived its deadline does."""

    def __init__(self) -> None:
        super().__init__()
        self.restores = 0
        self.lose_answer = False
        self.gate: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    *, actor: str | None = None) -> dict[str, Any]:
        if op != C.STATE_RESTORE:
            return await super().write(op, args, idem, actor=actor)
        self.restores += 1
        self.loop = asyncio.get_running_loop()
        self.gate = self.gate or asyncio.Event()
        await self.gate.wait()
        res = await super().write(op, args, idem, actor=actor)
        if self.lose_answer:
            raise OutcomeUnknown("timeout", idem or "")
        return res

    def release(self) -> None:
        assert self.loop is not None and self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)


def saved_file() -> tuple[bytes, str]:
    """A snapshot with one job and the root token it was saved with."""
    source = LocalReplica()
    saved: dict[str, Any] = {}

    def on_source(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        saved.update(file=call("GET", PATH, None, root)[1], root=root)

    session(source, on_source)
    return saved["file"], saved["root"]


def outcome(call: Call, poll: str) -> tuple[int, Any]:
    """The first answer to `poll` that is not 202 (each waits ANSWER_WITHIN_S at most)."""
    deadline = time.monotonic() + 10
    while True:
        status, body = call("GET", poll)
        if status != 202 or time.monotonic() > deadline:
            return status, body


def test_a_long_restore_answers_202_and_its_receipt_gives_the_outcome_without_a_token(
        monkeypatch: Any) -> None:
    monkeypatch.setattr(snapshot_routes, "ANSWER_WITHIN_S", 0.05)
    data, source_root = saved_file()
    target = SlowReplica()

    def on_target(call: Call) -> None:
        own = bootstrap(call)
        key = {"Idempotency-Key": "restore-1"}
        status, body = call("PUT", PATH, data, own, key)
        assert status == 202 and body["pending"], body
        poll = body["poll"]
        assert poll == f"/v1/operator/snapshot/restore/{body['receipt']}"
        assert len(body["receipt"]) >= 32  # the receipt is the poll's only credential
        # A repeat (a client that lost the 202) joins the restore in progress.
        status, again = call("PUT", PATH, data, own, key)
        assert status == 202 and again["receipt"] == body["receipt"]
        # Another file under the same key is refused.
        other = backup.pack(b"\x92\x01\x02", 5, 1, {}, created_at=0.0, source="x")
        assert call("PUT", PATH, other, own, key)[0] == 409
        status, still = call("GET", poll)
        assert status == 202 and still["receipt"] == body["receipt"]
        target.release()
        status, done = outcome(call, poll)  # no token: the restore replaced it
        assert status == 200, done
        assert done["restored"]["jobs"] == 1 and done["snapshot"]["counts"]["jobs"] == 1
        assert call("GET", "/v1/jobs", None, own)[0] == 403  # the token is gone indeed
        assert call("GET", "/v1/jobs", None, source_root)[0] == 200
        # Guessing a receipt finds nothing.
        status, body = call("GET", "/v1/operator/snapshot/restore/" + "A" * 32)
        assert status == 404 and body["error"]["field"] == "receipt", body

    session(target, on_target)
    assert target.restores == 1


def test_a_lost_answer_is_found_in_the_log_instead_of_restoring_again(
        monkeypatch: Any) -> None:
    """The write applies, then says "outcome unknown" (its deadline passed): the route
    finds the key in the idempotency table and answers, without proposing again (which
    the restored state would refuse: the token that asked is gone)."""
    monkeypatch.setattr(snapshot_routes, "ANSWER_WITHIN_S", 0.05)
    data, source_root = saved_file()
    target = SlowReplica()
    target.lose_answer = True

    def on_target(call: Call) -> None:
        own = bootstrap(call)
        status, body = call("PUT", PATH, data, own, {"Idempotency-Key": "restore-2"})
        assert status == 202, body
        target.release()
        status, body = outcome(call, body["poll"])
        assert status == 200 and body["restored"]["jobs"] == 1, body
        assert call("GET", "/v1/jobs", None, source_root)[0] == 200

    session(target, on_target)
    assert target.restores == 1


def test_a_large_restore_is_accepted_at_once(monkeypatch: Any) -> None:
    """Above ACCEPT_AT_ONCE_BYTES the answer is 202 before the apply could block this
    replica's event loop; the receipt then gives the result."""
    monkeypatch.setattr(snapshot_routes, "ACCEPT_AT_ONCE_BYTES", 1)
    data, _ = saved_file()
    target = LocalReplica()

    def on_target(call: Call) -> None:
        own = bootstrap(call)
        status, body = call("PUT", PATH, data, own, {"Idempotency-Key": "restore-3"})
        assert status == 202, body
        status, body = outcome(call, body["poll"])
        assert status == 200 and body["restored"]["jobs"] == 1, body

    session(target, on_target)
