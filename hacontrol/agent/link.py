"""The agent's one connection to the controllers.

A long-polled `POST /v1/agent/sync` to the leader carries heartbeats and state reports up
and desired allocations down. Followers answer `not_leader` with the leader's address; a dead
or silent replica makes the link move on to the next one. Answers from a Raft term lower than
the highest seen are ignored: a deposed leader cannot countermand its successor.

With TLS the link is mutual TLS: the agent shows its agent certificate, and only a peer with
a controller's certificate from the cluster's CA is talked to (the name checked is
`server.hacontrol`); a redirect to a plain-HTTP address is not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hacontrol.model import keepalive, protocol
from hacontrol.tls.roles import Role

from .assignments import HeldAssignments
from .httpclient import Client, ConnectFailed, HTTPError

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

# The long poll when the leader does not say how long (a leader of an earlier release,
# which has no keep-alive on its side: its polls must stay short to tell a partition).
LONG_POLL_S = 1.0
# The longest poll the agent accepts from a leader's `poll_s`.
MAX_POLL_S = 30.0
# The longest poll while this node's metrics change (they travel with the syncs): a
# changing value reaches the leader's autoscaler within about this.
BUSY_POLL_S = 1.0
# A failed sync is retried after RETRY_PAUSE_S, doubling with each failure in a row up to
# RETRY_MAX_S (with jitter): a leaderless cluster is not asked 10 times a second by every
# agent, and the first retry still comes at once after a leader change.
RETRY_PAUSE_S = 0.1
RETRY_MAX_S = 2.0
# How often the link asks the leader who the controllers are (`/v1/status` members): replicas
# added since the agent started are used, removed ones dropped.
MEMBERS_EVERY_S = 5.0


@dataclass
class SyncAnswer:
    term: int
    leader: str
    index: int
    acked: int
    allocations: list[Any]  # all the node's raw assignments, decoded by the agent
    # False when they are those of the previous answer (nothing to reconcile)
    changed: bool = True
    # The long poll the leader asks for when there is nothing to report (None: not said)
    poll_s: float | None = None


class StaleLeader(Exception):
    pass


def heard_until(sent_at: float | None, closed_at: float | None, failed_at: float,
                exc: BaseException) -> float | None:
    """Until when a sync that failed shows the leader still counted this node as alive
    (monotonic; None: it shows nothing).

    A leader counts a node alive while its sync is in flight on an open connection. The
    request reached it if it was written on an established connection (`sent_at`). If
    the peer then closed or reset that connection (`closed_at`), it counted the node
    until then. If the connection timed out instead (our deadline, or the kernel's
    keep-alive gave it up), it was alive at least until `keepalive.WINDOW_S` before: a
    path dead for longer would have failed it sooner.
    """
    if closed_at is not None:
        return closed_at
    if sent_at is None or not isinstance(exc, TimeoutError) or isinstance(exc, ConnectFailed):
        return None
    until = failed_at - keepalive.WINDOW_S
    return until if until >= sent_at else None


def poll_wait(poll_s: float | None, metrics_pending: bool) -> float:
    """How long a sync with nothing to report may wait for orders: as long as the leader
    asks (`poll_s`; None: `LONG_POLL_S`), but at most `BUSY_POLL_S` while this node's
    metrics change, since they travel only with syncs."""
    wait_s = poll_s if poll_s is not None else LONG_POLL_S
    return min(wait_s, BUSY_POLL_S) if metrics_pending else wait_s


def retry_pause(failures: int, rand: float) -> float:
    """The pause before the next sync after `failures` failed ones in a row; `rand` in
    [0, 1) spreads agents that failed together."""
    base = min(RETRY_MAX_S, RETRY_PAUSE_S * 2.0 ** min(max(failures - 1, 0), 16))
    return base * (0.5 + 0.5 * rand)


class ControllerLink:
    def __init__(self, controllers: list[str], token: str,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: the client context of mutual TLS (every controller address must then be
        https://); None speaks plain HTTP."""
        if not controllers:
            raise ValueError("at least one controller address is needed")
        if tls is not None:
            plain = [c for c in controllers if not c.startswith("https://")]
            if plain:
                raise ValueError(f"with TLS every controller address must be https://, "
                                 f"not {plain[0]}")
        self.tls = tls
        self._server_name = Role.SERVER.hostname if tls is not None else None
        self.controllers = [c.rstrip("/") for c in controllers]
        self.current = self.controllers[0]
        self.token = token
        self.highest_term = 0
        self.index = 0
        self.fingerprint: str | None = None
        self.leader_protocol = protocol.OLDEST  # as the last answer said
        # What the leader has told this node so far: answers carry only what changed.
        self.held = HeldAssignments()
        self._client: Client | None = None
        self._rotation = 0
        # Told the hash of the controllers' credential each answer carries (pinned once).
        self.on_controller_key: Callable[[object], None] | None = None
        self._members_at = time.monotonic()
        # Until when the last failed sync shows the leader still counted this node
        # (monotonic; see `heard_until`).
        self.heard_until: float | None = None

    async def __aenter__(self) -> ControllerLink:
        self._client = Client({"Authorization": f"Bearer {self.token}"}, self.tls,
                              keepalive=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()

    def _next_controller(self) -> None:
        # Move past the one that failed us, wherever it came from (a redirect may have
        # pointed at it).
        if self.current in self.controllers:
            self._rotation = self.controllers.index(self.current)
        self._rotation = (self._rotation + 1) % len(self.controllers)
        self.current = self.controllers[self._rotation]

    async def sync(self, node: dict[str, Any], reports: list[dict[str, Any]],
                   wait_s: float, extra: dict[str, Any] | None = None) -> SyncAnswer | None:
        """One round trip; None when it did not reach a leader (the caller retries)."""
        assert self._client is not None
        body = {"node": node, "reports": reports, "index": self.index, "wait_s": wait_s,
                "fingerprint": self.fingerprint,
                "term": self.highest_term, "delta": self.held.request(), **(extra or {})}
        protocol.stamped(body)
        started = time.monotonic()
        self.heard_until = None
        try:
            resp = await self._client.request(
                "POST", f"{self.current}/v1/agent/sync", json_body=body,
                timeout_s=wait_s + 4.0, connect_timeout_s=1.0,
                server_hostname=self._server_name)
            data = resp.json()
        except (HTTPError, ValueError) as exc:
            log.debug("sync with %s failed: %s", self.current, exc)
            sent, closed = self._client.last_sent_at, self._client.last_closed_at
            self.heard_until = heard_until(sent if sent >= started else None,
                                           closed if closed >= started else None,
                                           time.monotonic(), exc)
            self._next_controller()
            return None
        if resp.status != 200:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            leader_api = err.get("leader_api")
            if (err.get("code") == "not_leader" and isinstance(leader_api, str)
                    and leader_api != self.current
                    and (self.tls is None or leader_api.startswith("https://"))):
                self.current = leader_api.rstrip("/")
            else:
                if resp.status not in (503,):
                    log.warning("sync with %s: HTTP %d %s", self.current, resp.status, err)
                self._next_controller()
            return None
        answer = SyncAnswer(term=int(data["term"]), leader=str(data["leader"]),
                            index=int(data["index"]), acked=int(data.get("acked", 0)),
                            allocations=list(data["allocations"]),
                            poll_s=_poll_s(data.get("poll_s")))
        if answer.term < self.highest_term:
            log.warning("ignoring orders from %s at term %d: term %d already seen",
                        answer.leader, answer.term, self.highest_term)
            self._next_controller()
            return None
        if "delta" in data:
            before = self.held.changes
            merged = self.held.apply(answer.index, answer.allocations, data["delta"])
            if merged is None:
                return None  # the next request asks for everything
            answer.allocations = merged
            answer.changed = self.held.changes != before
        else:  # a leader that sends everything every time
            self.held.reset()
        self.highest_term = answer.term
        self.index = answer.index
        if self.on_controller_key is not None:
            self.on_controller_key(data.get("controller_credential_sha256"))
        self.fingerprint = data.get("fingerprint")
        # Absent from a leader of protocol 1: nothing else in the answer depends on it.
        self.leader_protocol = protocol.read_version(data.get("protocol"))
        if time.monotonic() - self._members_at >= MEMBERS_EVERY_S:
            self._members_at = time.monotonic()
            await self.refresh_members()
        return answer

    async def refresh_members(self) -> None:
        """Take the controllers' addresses from the leader's `/v1/status` (best effort)."""
        assert self._client is not None
        try:
            resp = await self._client.request("GET", f"{self.current}/v1/status",
                                              timeout_s=2.0,
                                              server_hostname=self._server_name)
            status = resp.json() if resp.status == 200 else None
        except (HTTPError, ValueError) as exc:
            log.debug("members from %s: %s", self.current, exc)
            return
        if not isinstance(status, dict) or status.get("role") != "leader":
            return
        apis = [str(m["api"]).rstrip("/") for m in status.get("members") or []
                if isinstance(m, dict) and isinstance(m.get("api"), str) and m["api"]]
        if self.tls is not None:
            apis = [a for a in apis if a.startswith("https://")]
        if apis and sorted(apis) != sorted(self.controllers):
            log.info("controllers now %s", ", ".join(apis))
            self.controllers = apis


def _poll_s(raw: object) -> float | None:
    """The leader's `poll_s`, if it is a sensible number of seconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0:
        return None
    return min(float(raw), MAX_POLL_S)


async def wait_first(wake: asyncio.Event, coro: Any) -> Any:
    """Run `coro`, but give up on it as soon as `wake` is set (returns None then)."""
    call = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(wake.wait())
    try:
        done, _ = await asyncio.wait({call, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if call in done:
        return call.result()
    call.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await call
    return None
