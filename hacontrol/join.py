"""`hacontrol server --join URL[,URL...]`: a new replica asks a running cluster to add it.

First it learns the members (`GET /v1/status`, from any replica given) so that its Raft
layer knows whom to listen to; then, once its own Raft and API are up, it asks for the add
(`POST /v1/operator/raft/peers`, operator write, carried to the leader by redirects that
are only followed to the cluster's own members), and the answer comes once it has caught
up. The request is retried, with backoff, while the cluster answers 503, refuses because
another change is in progress (409 change_in_progress), or cannot be reached.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from hacontrol.raft.membership import MemberInfo
from hacontrol.tls.roles import Role

log = logging.getLogger("hacontrol.join")

# Refusals that pass: another change is under way, or the leader could not connect to this
# replica's Raft port yet (a firewall that stays shut shows in the log's "retrying" lines
# until the join's deadline).
RETRY_REASONS = ("change_in_progress", "unreachable")
MAX_REDIRECTS = 5


def self_elected(me: dict[str, str]) -> dict[str, Any]:
    """The answer to a join redirected to the joiner itself: the add was committed (it is
    a voter) and it won an election since, which Raft grants only to a log holding every
    committed entry, so it has caught up. Asking itself instead would wait for its own
    catch-up, which a leader never sees (it has no match index), until the add times out
    and the join is refused, leaving a member that believes it was turned away."""
    return {"member": me, "index": None, "index_lag": 0, "catch_up_s": 0.0,
            "leader": True}


class JoinRefused(Exception):
    """The cluster refused the join for good (bad token, id or address taken...)."""


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port


class JoinClient:
    def __init__(self, urls: list[str], token: str, tls: ssl.SSLContext | None) -> None:
        if not urls:
            raise ValueError("--join needs at least one API URL")
        self.urls = [u.rstrip("/") for u in urls]
        self.token = token
        self.tls = tls
        self._server_name = Role.SERVER.hostname if tls is not None else None
        self.members: list[MemberInfo] = []

    async def _call(self, session: aiohttp.ClientSession, method: str, url: str,
                    body: Any = None, timeout: float = 10.0) -> tuple[int, Any, str | None]:
        async with session.request(
                method, url, json=body, allow_redirects=False,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=2.0),
                server_hostname=self._server_name) as resp:
            data = await resp.json(content_type=None) if resp.status != 307 else None
            return resp.status, data, resp.headers.get("Location")

    def _session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None
        return aiohttp.ClientSession(connector=connector)

    async def fetch_members(self, deadline_s: float = 60.0) -> list[MemberInfo]:
        """The cluster's members as a replica lists them in /v1/status."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        async with self._session() as session:
            while True:
                for url in self.urls:
                    try:
                        status, data, _ = await self._call(session, "GET", url + "/v1/status")
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        log.info("join: %s unreachable: %s", url, exc)
                        continue
                    members = [MemberInfo.from_dict(m) for m in
                               (data.get("members", []) if isinstance(data, dict) else [])]
                    found = [m for m in members if m is not None]
                    if status == 200 and found:
                        self.members = found
                        return found
                if loop.time() >= deadline:
                    raise JoinRefused(f"no replica of {', '.join(self.urls)} listed members")
                await asyncio.sleep(0.5)

    async def join(self, me: MemberInfo, deadline_s: float = 600.0) -> dict[str, Any]:
        """Ask for the add until it is done; the leader's answer (member, catch-up time)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        pause = 0.2
        body = me.to_dict()
        async with self._session() as session:
            while True:
                for url in self.urls:
                    try:
                        answer = await self._post(session, url, body)
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        log.info("join: %s: %s", url, exc)
                        continue
                    if answer is not None:
                        return answer
                if loop.time() >= deadline:
                    raise JoinRefused("the cluster did not add this replica in time")
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)

    async def _post(self, session: aiohttp.ClientSession, url: str, body: dict[str, str]
                    ) -> dict[str, Any] | None:
        """One attempt through `url`, following redirects to members: the answer, None to
        retry, JoinRefused when refused for good."""
        allowed = {_origin(u) for u in self.urls} | {_origin(m.api) for m in self.members}
        target = url + "/v1/operator/raft/peers"
        for _ in range(MAX_REDIRECTS):
            # The catch-up of a large state may take a while: the leader answers once done.
            status, data, location = await self._call(session, "POST", target, body,
                                                      timeout=180.0)
            if status == 307 and location:
                if _origin(location) == _origin(body["api"]):
                    return self_elected(body)
                if _origin(location) not in allowed:
                    raise JoinRefused(f"redirected to {location}, not a member")
                target = location
                continue
            if status == 200 and isinstance(data, dict):
                return data
            err = data.get("error", {}) if isinstance(data, dict) else {}
            if status == 503 or (status == 409 and err.get("reason") in RETRY_REASONS):
                log.info("join: %s answered %d (%s); retrying", target, status,
                         err.get("message"))
                return None
            raise JoinRefused(f"{target}: HTTP {status}: {err.get('message') or data}")
        return None
