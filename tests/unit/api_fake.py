"""An in-memory replica behind the API's own seam (`api/backend.py`): writes apply to a real
`StateMachine`, in order, as the log would; `call` sends one request through the real app."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api.app import build_app
from hacontrol.model.errors import Rejection
from hacontrol.scheduler.leader_state import Leadership
from hacontrol.state import commands as C

from .test_api_errors import TOKEN, FakeReplica


class ApplyingReplica(FakeReplica):
    def __init__(self) -> None:
        super().__init__()
        self.index = self.m.index  # the fake's ACL bootstrap is already applied

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None,
                    *, actor: str | None = None) -> dict[str, Any]:
        self.index += 1
        result = self.m.apply(C.Command(op, time.time(), args, idem, actor).encode(),
                              self.index)
        if not result.get("ok"):
            err = result["error"]
            raise Rejection(err["code"], err["message"], err.get("field"))
        return result


def call(replica: FakeReplica, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, leadership: Leadership | None = None,
         **app_options: Any) -> tuple[int, dict[str, str], bytes]:
    async def go() -> tuple[int, dict[str, str], bytes]:
        nonlocal leadership
        if leadership is None:
            leadership = Leadership(lambda: 3 if replica.leading else None)
        app: web.Application = build_app(replica, replica, leadership, TOKEN, **app_options)
        sent = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, data=body, headers=sent)
            return resp.status, dict(resp.headers), await resp.read()
    return asyncio.run(go())
