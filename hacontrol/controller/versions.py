"""What each replica understands, and the rule that keeps new command types out of the log
until every voter does.

Each replica publishes its protocol version and the command types it knows in
`GET /v1/status` (`protocol`, `ops`); every replica reads its peers' reports
(`CapabilityWatch`) and its write path refuses an op some voter has not reported
(`refusal`). A replica that reports nothing (one of protocol 1, or one not heard from yet)
is taken to know protocol 1's ops only, so the ops every version knows never wait, and a
new op waits until the last voter runs a version that reports it. The reports are not in
the log: a version before them could not read such an entry, and they describe processes,
not the replicated state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from hacontrol.model import protocol
from hacontrol.state import commands as C

log = logging.getLogger("hacontrol.versions")
POLL_S = 1.0
POLL_TIMEOUT_S = 2.0
# Long enough for two polls of a peer that answers; a peer that does not answer keeps a
# write of a newer type waiting this long before it is refused.
UNHEARD_WAIT_S = 2.5


@dataclass(frozen=True)
class Capabilities:
    protocol: int
    ops: frozenset[str]

    @classmethod
    def of_status(cls, raw: object) -> Capabilities:
        """A peer's report as its `GET /v1/status` gives it; no report is protocol 1."""
        d = raw if isinstance(raw, dict) else {}
        version = protocol.read_version(d.get("protocol"))
        ops = d.get("ops")
        if version <= protocol.OLDEST or not isinstance(ops, list):
            return ASSUMED
        return cls(version, frozenset(op for op in ops if isinstance(op, str)))


ASSUMED = Capabilities(protocol.OLDEST, C.PROTOCOL1_OPS)


@dataclass(frozen=True)
class Vouch:
    """A peer's first-hand word: `members` reported to it, and each of them knows `ops`."""
    members: frozenset[str]
    ops: frozenset[str]

    @classmethod
    def of_status(cls, raw: object, caps: Capabilities) -> Vouch:
        d = raw if isinstance(raw, dict) else {}
        seen = d.get("member_protocols")
        waiting = d.get("ops_waiting")
        if not isinstance(seen, dict) or not isinstance(waiting, list):
            return cls(frozenset(), frozenset())
        members = frozenset(k for k, v in seen.items()
                            if isinstance(k, str) and isinstance(v, int) and v > protocol.OLDEST)
        return cls(members, caps.ops - {op for op in waiting if isinstance(op, str)})


def local() -> Capabilities:
    """This replica's own report (the testing switches of `model/protocol.py` included)."""
    version = protocol.spoken()
    ops = C.CAPABILITIES if version > protocol.OLDEST else C.PROTOCOL1_OPS
    return Capabilities(version, frozenset(ops - protocol.pretend_missing_ops()))


def refusal(op: str, voters: Mapping[str, Capabilities | None]) -> str | None:
    """Why `op` may not be proposed now (None: it may): the voters that do not know it."""
    missing = sorted(name for name, caps in voters.items() if op not in (caps or ASSUMED).ops)
    if not missing:
        return None
    who = ", ".join(f"{name} (protocol {(voters[name] or ASSUMED).protocol})"
                    for name in missing)
    what = (f"job spec section {op.removeprefix('job_spec.')!r}" if op in C.SPEC_FEATURES
            else f"command type {op!r}")
    return f"{what} is not known to replica {who}: upgrade every replica before using it"


class CapabilityWatch:
    """This replica's view of every voter's report, refreshed by polling their status.

    A peer that stops answering keeps its last report: a replica restarts with the version
    it had or a newer one (downgrades are not supported, docs/operations.md)."""

    def __init__(self, me: str, voters: Callable[[], Mapping[str, str]],
                 tls: ssl.SSLContext | None = None, server_name: str | None = None) -> None:
        """`voters()`: id -> API address of every voter, this replica included."""
        self.me = me
        self.mine = local()
        self.voters = voters
        self.tls = tls
        self.server_name = server_name
        self.reports: dict[str, Capabilities] = {me: self.mine}
        # What each peer vouches for: the voters it has heard from itself, and the ops
        # every one of them knows (its own ops less its `ops_waiting`).
        self.vouched: dict[str, Vouch] = {}

    def view(self) -> dict[str, Capabilities | None]:
        return {name: self.reports.get(name) for name in self.voters()}

    def refusal(self, op: str) -> str | None:
        # The common case costs one set lookup per voter.
        view = self.view()
        refused = refusal(op, view)
        if refused is None:
            return None
        # A voter this replica has not heard from (it restarted while that voter was down)
        # is vouched for by a peer that heard it: a replica never goes back to an older
        # version, so the peer's word stays true.
        missing = {name for name, caps in view.items() if op not in (caps or ASSUMED).ops}
        if all(view[name] is None for name in missing) and any(
                op in v.ops and missing <= v.members for v in self.vouched.values()):
            return None
        return refused

    def unheard(self) -> list[str]:
        """The voters whose report has not arrived yet (just started, or unreachable)."""
        return [name for name in self.voters() if name not in self.reports]

    async def settled_refusal(self, op: str, wait_s: float = UNHEARD_WAIT_S) -> str | None:
        """`refusal(op)`, but a refusal that only a voter not heard from yet causes waits
        up to `wait_s` for its report: right after a start, every peer counts as the
        oldest version until its first report, and a write of a newer type would be
        refused for that alone."""
        refused = self.refusal(op)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while refused is not None and self.unheard() and loop.time() < deadline:
            await asyncio.sleep(0.05)
            refused = self.refusal(op)
        return refused

    def status(self) -> dict[str, Any]:
        """What `GET /v1/status` adds: each voter's version as seen here, and the ops
        that wait for an upgrade."""
        view = self.view()
        return {"member_protocols": {k: (v.protocol if v else None) for k, v in view.items()},
                "ops_waiting": sorted(op for op in C.CAPABILITIES
                                      if refusal(op, view) is not None)}

    async def poll_once(self, session: aiohttp.ClientSession) -> None:
        # All at once: a partitioned peer must not delay hearing from the others.
        await asyncio.gather(*(self._ask(session, name, api)
                               for name, api in self.voters().items() if name != self.me))

    async def _ask(self, session: aiohttp.ClientSession, name: str, api: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
            async with session.get(f"{api.rstrip('/')}/v1/status",
                                   server_hostname=self.server_name) as resp:
                if resp.status == 200:
                    body = await resp.json(content_type=None)
                    caps = Capabilities.of_status(body)
                    if self.reports.get(name) != caps:
                        log.info("replica %s speaks protocol %d", name, caps.protocol)
                    self.reports[name] = caps
                    self.vouched[name] = Vouch.of_status(body, caps)

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            while True:
                await self.poll_once(session)
                await asyncio.sleep(POLL_S)
