"""The `membership` nemesis: replicas joined and removed while other faults hit the cluster.

Each window makes one membership change, chosen when it starts from the voters the leader
lists then (`choose_change`): a join while there are `MIN_VOTERS` or fewer, a removal at
`MAX_VOTERS`, either one (drawn from the window's seed) in between; no change at all while
an earlier join is still catching up, so one member changes at a time and the cluster never
drops below `MIN_VOTERS`.

- A join starts a new replica (`Backend.add_replica`: an id and an address never used
  before, `hacontrol server --join URL,...`). It is done when the replica logs that the
  leader answered its add, which the leader does once it has caught up.
- A removal is `DELETE /v1/operator/raft/peers/ID` through any replica (redirects lead to
  the leader) of a random voter: a follower, the leader itself (which hands leadership over
  first), or one the window has just killed. Once removed it is retired: SIGKILLed and no
  longer tracked. A 409 `change_in_progress` or `quorum_at_risk` is an expected refusal,
  recorded with the window, not an error.

Around the change, a companion fault drawn from the seed among those the backend can do:
none, SIGKILL of the leader or of a random replica, the leader cut off, a minority cut off;
started before the change or a moment after it. It heals at the window's end; then the
change is waited for, and the backend's replicas are reconciled with the leader's table of
voters (a removal whose answer was lost is found there).

What the checkers compare follows the members: log snapshots (Log Matching) cover the
replicas that are members and caught up (a removed one is no longer compared, a joiner once
its join is answered), and the workload sends requests to a joined replica once it has
caught up and stops after its removal.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from ..cluster.base import PARTITION, Backend, Member
from .base import K_MEMBERSHIP, FaultPlan
from .network import halves

log = logging.getLogger("chaos.nemesis.membership")

MIN_VOTERS = 3
MAX_VOTERS = 5
# Long enough to start a replica, change the membership and let the companion fault bite.
WINDOW_MIN_S = 5.0
# A join answers once the joiner has caught up (the leader waits up to 120 s for that); in
# these runs the state is small, so a minute means something is wrong.
JOIN_DEADLINE_S = 60.0
# One DELETE may take the leader's change timeout (10 s) plus a hand-over (5 s).
CALL_TIMEOUT_S = 16.0
REMOVE_DEADLINE_S = 25.0
RECONCILE_S = 20.0
MAX_REDIRECTS = 4
PEERS = "/v1/operator/raft/peers"
# What hacontrol/server.py logs when the leader answered the add, or refused it for good.
JOINED_LINE = "joined the cluster"
REFUSED_LINE = "join refused"
# Refusals the cluster is expected to give under faults.
EXPECTED_REFUSALS = ("change_in_progress", "quorum_at_risk")
COMPANIONS = ("none", "kill-leader", "kill-random")
PARTITION_COMPANIONS = ("partition-leader", "partition-minority")


def plan(rng: random.Random, reps: list[str], agents: list[str]) -> FaultPlan:
    """Everything a membership window does depends on the cluster when it starts (the voters,
    the leader), so it is drawn then, from the window's seed."""
    return FaultPlan(K_MEMBERSHIP, min_duration_s=WINDOW_MIN_S)


def choose_change(rng: random.Random, voters: list[str], pending: list[str]) -> str:
    """"join", "remove", or "none" while a join is still catching up."""
    if pending:
        return "none"
    if len(voters) <= MIN_VOTERS:
        return "join"
    if len(voters) >= MAX_VOTERS:
        return "remove"
    return rng.choice(("join", "remove"))


def companions(capabilities: frozenset[str] | set[str]) -> list[str]:
    return [*COMPANIONS, *(PARTITION_COMPANIONS if PARTITION in capabilities else ())]


def companion_fault(rng: random.Random, name: str, reps: list[str], leader: str | None
                    ) -> tuple[list[str], list[list[str]]]:
    """(replicas to SIGKILL, partition groups) of the companion fault `name`."""
    lead = leader if leader in reps else rng.choice(reps)
    if name == "kill-leader":
        return [lead], []
    if name == "kill-random":
        return [rng.choice(reps)], []
    if name == "partition-leader":
        return [], [[lead], [r for r in reps if r != lead]]
    if name == "partition-minority":
        minority, majority = halves(rng, reps)
        return [], [minority, majority]
    return [], []


def join_state(log_path: Any) -> str | None:
    """"joined" or "refused" from the joiner's log; None while it is still asking."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return None
    if JOINED_LINE in text:
        return "joined"
    return "refused" if REFUSED_LINE in text else None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # followed by hand, and only to members


_OPENER = urllib.request.build_opener(_NoRedirect)


def call(method: str, url: str, token: str, timeout: float) -> tuple[int, Any, str | None]:
    """(status, JSON body, Location); OSError when nothing answered."""
    req = urllib.request.Request(url, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            raw, status, location = resp.read(), resp.status, None
    except urllib.error.HTTPError as exc:
        raw, status, location = exc.read(), exc.code, exc.headers.get("Location")
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    return status, body, location


def _reason(body: Any) -> str | None:
    err = body.get("error") if isinstance(body, dict) else None
    return err.get("reason") if isinstance(err, dict) else None


class Host(Protocol):
    """What a window needs from the executor running it."""

    backend: Backend
    leader_finder: Callable[[], str | None]

    def kill_member(self, name: str) -> None: ...

    def restart_member(self, name: str) -> None: ...


class Changes:
    """Joins and removals on a backend that can (`MEMBERSHIP`), through the cluster's API.

    `on_joined(member)` is called once a joiner has caught up, `on_retired(name)` once a
    removed replica is retired (both from worker threads); `log_snapshot()` reads the logs
    of the members to compare (see `compared`).
    """

    def __init__(self, backend: Backend, token: str,
                 on_joined: Callable[[Member], object] = lambda m: None,
                 on_retired: Callable[[str], object] = lambda n: None,
                 log_snapshot: Callable[[], dict[str, Any]] | None = None) -> None:
        self.backend = backend
        self.token = token
        self.on_joined = on_joined
        self.on_retired = on_retired
        self.log_snapshot = log_snapshot
        self.pending: dict[str, Member] = {}  # joiners not caught up yet
        self._lock = threading.RLock()
        self._worker: threading.Thread | None = None
        self._result: dict[str, Any] = {}
        self._killed: list[str] = []  # by the open window's companion fault
        self._cut: list[list[str]] | None = None  # its partition

    # ---------------------------------------------------------------- reading

    def replicas(self) -> list[Member]:
        return [m for m in self.backend.members() if m.kind == "replica"]

    def compared(self) -> list[Member]:
        """The replicas whose logs the checkers compare: members, caught up."""
        with self._lock:
            return [m for m in self.replicas() if m.name not in self.pending]

    def _apis(self) -> list[str]:
        return [m.api_url for m in self.compared() if m.api_url]

    def peer_table(self, leader: str | None = None) -> dict[str, dict[str, Any]] | None:
        """The leader's table of voters by id, or None when no replica gives it."""
        first = [m.api_url for m in self.replicas() if m.name == leader and m.api_url]
        for api in dict.fromkeys(first + self._apis()):
            try:
                status, body, location = call("GET", api + PEERS, self.token, 2.0)
                if status == 307 and location:
                    status, body, _ = call("GET", location, self.token, 2.0)
            except OSError:
                continue
            if status == 200 and isinstance(body, dict):
                return {p["id"]: p for p in body.get("peers", [])}
        return None

    def _check_pending(self) -> None:
        with self._lock:
            for m in list(self.pending.values()):
                if join_state(m.log_path) == "joined":
                    self._joined(m)

    def _joined(self, m: Member) -> None:
        with self._lock:
            if self.pending.pop(m.name, None) is not None:
                self.on_joined(m)

    def _retire(self, name: str) -> None:
        with self._lock:
            self.pending.pop(name, None)
            self.backend.retire(name)
        self.on_retired(name)

    # ------------------------------------------------------------------ windows

    def start(self, host: Host, w: Any, targets: list[str],
              groups: list[list[str]]) -> dict[str, Any]:
        """Begin window `w`: its companion fault and its change (in a worker thread).

        Fills `targets` (the member changed, then those killed) and `groups` (the
        partition) in place, for the window's events; returns what goes with its start.
        """
        rng = random.Random(w.seed)
        leader = _leader(host)
        self._check_pending()
        table = self.peer_table(leader)
        voters = sorted(table) if table is not None else sorted(m.name for m in self.compared())
        action = choose_change(rng, voters, sorted(self.pending))
        companion = rng.choice(companions(self.backend.capabilities))
        fault_first = rng.random() < 0.5
        delay = round(rng.uniform(0.2, 1.5), 3)
        victim = rng.choice(voters) if action == "remove" else None
        notes: dict[str, Any] = {
            "change": action, "voters": voters,
            "voters_from": "leader" if table is not None else "backend", "leader": leader,
            "companion": companion, "order": "fault first" if fault_first else "change first",
            "delay_s": delay, "pending": sorted(self.pending)}
        self._killed, self._cut, self._result = [], None, {}
        if fault_first:
            self._companion(host, rng, companion, leader, targets, groups)
            time.sleep(delay)
        try:
            member = self._launch(action, victim, rng, groups)
        except Exception as exc:  # e.g. the backend could not start a replica
            log.exception("starting a membership change failed")
            member, self._result = victim, {"outcome": "failed", "reason": repr(exc)}
        if member is not None:
            targets.insert(0, member)
        if not fault_first:
            time.sleep(delay)
            self._companion(host, rng, companion, leader, targets, groups)
        notes["member"] = member
        return notes

    def _companion(self, host: Host, rng: random.Random, name: str, leader: str | None,
                   targets: list[str], groups: list[list[str]]) -> None:
        reps = [m.name for m in self.replicas()]
        kill, cut = companion_fault(rng, name, reps, leader)
        for n in kill:
            self._killed.append(n)
            targets.append(n)
            host.kill_member(n)
        if cut:
            self._partition(cut, groups)

    def _partition(self, cut: list[list[str]], groups: list[list[str]]) -> None:
        # Agents (none in these runs, usually) stay reachable from every side.
        agents = [m.name for m in self.backend.members() if m.kind == "agent"]
        self._cut = [list(g) for g in cut]
        groups[:] = [list(g) for g in cut]
        self.backend.partition([set(g) | set(agents) for g in cut])

    def _launch(self, action: str, victim: str | None, rng: random.Random,
                groups: list[list[str]]) -> str | None:
        if action == "join":
            m = self.backend.add_replica(self._apis())
            with self._lock:
                self.pending[m.name] = m
            if self._cut is not None:
                # A replica named in no group is cut off from all: place it on a side.
                self._cut[rng.randrange(len(self._cut))].append(m.name)
                self._partition(self._cut, groups)
            self._spawn(lambda: self._join(m))
            return m.name
        if action == "remove" and victim is not None:
            self._spawn(lambda: self._remove(victim))
            return victim
        return None

    def _spawn(self, work: Callable[[], dict[str, Any]]) -> None:
        def run() -> None:
            started = time.monotonic()
            try:
                out = work()
            except Exception as exc:  # reported with the window, never lost
                log.exception("membership change failed")
                out = {"outcome": "failed", "reason": repr(exc)}
            self._result = {**out, "took_s": round(time.monotonic() - started, 3)}
        self._worker = threading.Thread(target=run, name="chaos-membership", daemon=True)
        self._worker.start()

    def _join(self, m: Member) -> dict[str, Any]:
        deadline = time.monotonic() + JOIN_DEADLINE_S
        while time.monotonic() < deadline:
            state = join_state(m.log_path)
            if state == "joined":
                self._joined(m)
                return {"outcome": "done"}
            if state == "refused":
                return {"outcome": "failed", "reason": "the cluster refused the join for good "
                        f"(see {m.log_path.name})"}
            time.sleep(0.1)
        return {"outcome": "unknown",
                "reason": f"not caught up within {JOIN_DEADLINE_S:g} s; still joining"}

    def _remove(self, victim: str) -> dict[str, Any]:
        deadline = time.monotonic() + REMOVE_DEADLINE_S
        last = None
        while time.monotonic() < deadline:
            for api in self._apis():
                try:
                    status, body = self._delete(api, victim)
                except OSError as exc:
                    last = f"{api}: {exc!r}"
                    continue
                reason = _reason(body)
                if status == 200:
                    self._retire(victim)
                    return {"outcome": "done", "forced": bool((body or {}).get("forced"))}
                if status == 409 and reason in EXPECTED_REFUSALS:
                    return {"outcome": "refused", "reason": reason,
                            "message": ((body or {}).get("error") or {}).get("message")}
                if status == 404:
                    # Not a member for this leader: an earlier attempt whose answer was lost
                    # took effect, or a stale leader's; the reconciliation decides.
                    return {"outcome": "unknown", "reason": "not_found"}
                if status == 503 or status == 307:
                    last = f"HTTP {status} {reason or ''}".strip()
                    continue
                return {"outcome": "failed", "reason": f"HTTP {status}: {body}"}
            time.sleep(0.2)
        return {"outcome": "unknown", "reason": last}

    def _delete(self, api: str, victim: str) -> tuple[int, Any]:
        url = f"{api}{PEERS}/{victim}"
        members = {m.api_url for m in self.replicas() if m.api_url}
        for _ in range(MAX_REDIRECTS):
            status, body, location = call("DELETE", url, self.token, CALL_TIMEOUT_S)
            if status == 307 and location:
                if location.split(PEERS)[0] not in members:
                    return 503, {"error": {"reason": f"redirected to {location}"}}
                url = location
                continue
            return status, body
        return 307, None

    def end(self, host: Host) -> dict[str, Any]:
        """Heal the companion fault, wait for the change, reconcile; what the end event
        carries: the change's outcome, the voters after, a log snapshot."""
        if self._cut is not None:
            self.backend.heal()
            self._cut = None
        for n in self._killed:
            host.restart_member(n)
        worker = self._worker
        if worker is not None:
            worker.join(JOIN_DEADLINE_S + REMOVE_DEADLINE_S)
        self._worker = None
        out: dict[str, Any] = dict(self._result) or (
            {"outcome": "unknown", "reason": "still under way"} if worker is not None
            else {"outcome": "none"})
        out.update(self.reconcile(host))
        if self.log_snapshot is not None:
            out["logs"] = [self._snapshot("a membership change")]
        return out

    def _snapshot(self, why: str) -> dict[str, Any]:
        assert self.log_snapshot is not None
        try:
            return {"after": why, **self.log_snapshot()}
        except Exception as exc:  # reported, and must not stop the run
            log.exception("reading the replicas' logs failed")
            return {"after": why, "error": repr(exc)}

    def reconcile(self, host: Host, wait_s: float = RECONCILE_S) -> dict[str, Any]:
        """Match the backend's replicas to the voters the leader lists (the same list twice,
        a second apart): a tracked replica it no longer lists, and that is not joining, was
        removed (a lost answer) and is retired."""
        deadline = time.monotonic() + wait_s
        prev: list[str] | None = None
        table = None
        while time.monotonic() < deadline:
            t = self.peer_table(_leader(host))
            ids = sorted(t) if t is not None else None
            if ids is not None and ids == prev:
                table = t
                break
            prev = ids
            time.sleep(1.0)
        if table is None:
            return {"voters_after": None}
        self._check_pending()
        with self._lock:
            gone = [m.name for m in self.replicas()
                    if m.name not in table and m.name not in self.pending]
        for name in gone:
            self._retire(name)
        tracked = {m.name for m in self.replicas()}
        return {"voters_after": sorted(table), "retired": gone,
                "untracked_voters": sorted(set(table) - tracked),
                "dead_voters": sorted(i for i, r in table.items() if not r.get("alive"))}

    def settle(self, host: Host) -> dict[str, Any]:
        """After the last window, faults healed: let joins still under way finish, then
        reconcile; a joiner the leader never listed is given up and retired."""
        deadline = time.monotonic() + JOIN_DEADLINE_S
        while self.pending and time.monotonic() < deadline:
            self._check_pending()
            time.sleep(0.2)
        out = self.reconcile(host)
        abandoned = sorted(self.pending)
        for name in abandoned:
            if name not in (out.get("voters_after") or []):
                self._retire(name)
        out["abandoned_joins"] = abandoned
        return out

    def final_view(self, leader: str | None) -> dict[str, Any]:
        """The leader's voters beside the replicas running, for the `membership` checker."""
        table = self.peer_table(leader)
        return {"tracked": sorted(m.name for m in self.replicas()),
                "voters": sorted(table) if table is not None else None,
                "dead_voters": sorted(i for i, r in (table or {}).items()
                                      if not r.get("alive")),
                "retired": sorted(m.name for m in self.backend.retired()),
                "pending": sorted(self.pending)}


def _leader(host: Host) -> str | None:
    try:
        return host.leader_finder()
    except Exception as exc:  # no leader known is an answer too
        log.warning("leader_finder failed: %r", exc)
        return None
