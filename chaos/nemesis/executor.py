"""The executor: runs a fault schedule against a backend beside the workload."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..cluster.base import LOSS, PARTITION, PAUSE, Backend
from .base import (
    AGENT,
    K_CRASH,
    K_KILL,
    K_LOAD,
    K_LOSS,
    K_MEMBERSHIP,
    K_OVERLOAD,
    K_PARTITION,
    K_PAUSE,
    K_POWER,
    K_POWER_ELECTION,
    K_RESTART_ALL,
    KIND_NEEDS,
    LEADER,
    OTHERS,
    FaultWindow,
)
from .membership import Changes
from .registry import AGENT_NEMESES, NEMESES, check_supported, mixable, replicas_agents

log = logging.getLogger("chaos.nemesis")

@dataclass
class _Active:
    window: FaultWindow
    targets: list[str]
    groups: list[list[str]]
    extra: dict[str, Any]


class Nemesis:
    """Runs a schedule against a backend, reporting each fault's start and end.

    `run()` is a coroutine meant to run beside an asyncio workload: everything that may block
    (backend calls, `leader_finder`'s HTTP polls) runs in a worker thread, one at a time.
    `load_burst(size)` is called from a worker thread with the burst's number of operations;
    it must only start the burst (e.g. `asyncio.run_coroutine_threadsafe`) and return.
    `crash_storm(size, seed)` (runs with agents) SIGKILLs up to `size` of the run's job
    processes, chosen from `seed`, and returns their pids; it is called from a worker thread.
    Events go to `on_event` as dicts: t, wall, fault (nemesis name), kind, phase
    ("start" | "end" | "skip"), id (the window), targets, plus groups/percent/leader/error
    where they apply. `log_snapshot()` (power cuts) reads every replica's log right after a
    cut and says whether they still agree; its result goes with the window's start event as
    `logs`. `overload(count)` (runs with agents) starts scaling the run's burst job to
    `count` allocations and returns at once; it is called from a worker thread.
    `membership` (the `membership` nemesis) joins and removes replicas.
    `final_heal()` undoes whatever is still in effect.
    """

    def __init__(self, backend: Backend, schedule: list[FaultWindow],
                 leader_finder: Callable[[], str | None],
                 on_event: Callable[[dict[str, Any]], None],
                 load_burst: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 crash_storm: Callable[[int, int], list[int]] | None = None,
                 log_snapshot: Callable[[], dict[str, Any]] | None = None,
                 overload: Callable[[int], object] | None = None,
                 membership: Changes | None = None) -> None:
        self.backend = backend
        self.schedule = schedule
        self.leader_finder = leader_finder
        self.on_event = on_event
        self.load_burst = load_burst
        self.crash_storm = crash_storm
        self.log_snapshot = log_snapshot
        self.overload = overload
        self.membership = membership
        self.clock = clock
        self._lock = threading.RLock()
        self._active: _Active | None = None
        self._killed: set[str] = set()
        self._paused: set[str] = set()
        caps = set(backend.capabilities)
        self._skip: set[int] = set()
        # Before setup the backend names no members; the schedule's own names stand in.
        self._names = [m.name for m in backend.members()] or sorted(
            {n for w in schedule for n in (*w.targets, *(x for g in w.groups for x in g))
             if not n.startswith("@")})
        self.schedule = [self._fit(w, caps) for w in schedule]

    def _fit(self, w: FaultWindow, caps: set[str]) -> FaultWindow:
        """The window itself if this run can do it; for mixed, a seeded substitute; else refuse."""
        if self._can(w.kind, caps):
            return w
        if w.schedule != "mixed":
            check_supported(w.nemesis, self.backend.name, caps, self.load_burst is not None,
                            has_crash=self.crash_storm is not None,
                            has_overload=self.overload is not None,
                            has_membership=self.membership is not None)
        # A mixed schedule made without the backend's capabilities: redraw this window from
        # what the backend can do, from the window's own seed so the run stays reproducible.
        rng = random.Random(w.seed)
        reps, agents = replicas_agents(self._names)
        pool = [n for n in mixable(caps)
                if (n != "load-burst" or self.load_burst is not None)
                and (n != "crash-storm" or self.crash_storm is not None)
                and (agents or n not in AGENT_NEMESES)]
        if not pool or not reps:
            self._skip.add(w.id)
            return w
        name = rng.choice(pool)
        planner = NEMESES[name].plan
        assert planner is not None
        plan = planner(rng, reps, agents)
        end = w.end_s if plan.max_duration_s is None else min(w.end_s,
                                                              w.start_s + plan.max_duration_s)
        return FaultWindow(w.id, w.start_s, end, name, plan.kind, plan.targets, plan.groups,
                           plan.percent, plan.size, rng.randrange(2**31), w.schedule)

    def _can(self, kind: str, caps: set[str]) -> bool:
        return (KIND_NEEDS[kind] <= caps and (kind != K_LOAD or self.load_burst is not None)
                and (kind != K_CRASH or self.crash_storm is not None)
                and (kind != K_OVERLOAD or self.overload is not None)
                and (kind != K_MEMBERSHIP or self.membership is not None))

    # ------------------------------------------------------------- reporting

    def _emit(self, w: FaultWindow, phase: str, targets: list[str],
              groups: list[list[str]] | None = None, **extra: Any) -> None:
        ev: dict[str, Any] = {"t": self.clock(), "wall": time.time(), "fault": w.nemesis,
                              "kind": w.kind, "phase": phase, "id": w.id,
                              "targets": list(targets)}
        if groups:
            ev["groups"] = [list(g) for g in groups]
        if w.percent is not None:
            ev["percent"] = w.percent
        if w.size is not None:
            ev["size"] = w.size
        ev.update(extra)
        try:
            self.on_event(ev)
        except Exception:  # a broken recorder must not leave a fault in place
            log.exception("on_event failed for %s", ev)

    # --------------------------------------------------------------- running

    async def run(self, stop_event: asyncio.Event) -> None:
        t0 = time.monotonic()
        try:
            for w in self.schedule:
                if not await self._sleep_until(t0 + w.start_s, stop_event):
                    break
                if w.id in self._skip:
                    self._emit(w, "skip", w.targets, w.groups,
                               reason=f"the {self.backend.name} backend cannot do {w.kind}")
                    continue
                await asyncio.to_thread(self._start, w)
                await self._sleep_until(t0 + w.end_s, stop_event)
                await asyncio.to_thread(self._end)
        finally:
            # Cancelled or stopped mid-window: never leave the fault behind.
            if self._active is not None:
                await asyncio.shield(asyncio.to_thread(self._end))

    @staticmethod
    async def _sleep_until(when: float, stop_event: asyncio.Event) -> bool:
        """False if stopped first."""
        delay = when - time.monotonic()
        if stop_event.is_set():
            return False
        if delay <= 0:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), delay)
            return False
        return True

    def _resolve(self, w: FaultWindow) -> tuple[list[str], list[list[str]], dict[str, Any]]:
        reps, agents = replicas_agents([m.name for m in self.backend.members()])
        extra: dict[str, Any] = {}
        leader: str | None = None
        if LEADER in w.targets or any(LEADER in g for g in w.groups):
            try:
                leader = self.leader_finder()
            except Exception as exc:
                log.warning("leader_finder failed: %r", exc)
            extra["leader"] = leader
            if leader is None or leader not in reps:
                # No leader right now: a seeded stand-in keeps the window meaningful.
                leader = random.Random(w.seed).choice(reps)
                extra["leader_unknown"] = True
        others = [r for r in reps if r != leader]
        agent = random.Random(w.seed).choice(agents) if agents else None

        def expand(names: list[str]) -> list[str]:
            out: list[str | None] = []
            for n in names:
                out += ([leader] if n == LEADER else others if n == OTHERS else
                        [agent] if n == AGENT else [n])
            return [n for n in dict.fromkeys(out) if n is not None]

        targets = expand(w.targets)
        groups = [expand(g) for g in w.groups]
        if groups:
            # Agents named in no group would be cut off from every replica; a replica
            # partition keeps them reachable from all sides.
            named = {n for g in groups for n in g}
            loose = [a for a in agents if a not in named]
            groups = [g + loose for g in groups]
        return targets, groups, extra

    def _start(self, w: FaultWindow) -> None:
        with self._lock:
            targets, groups, extra = self._resolve(w)
            self._active = _Active(w, targets, groups, extra)
            try:
                self._KINDS[w.kind][0](self, targets, groups, w)
            except Exception as exc:
                log.exception("injecting %s failed", w.nemesis)
                extra["error"] = repr(exc)
            self._emit(w, "start", targets, groups, **extra)

    def _end(self) -> None:
        with self._lock:
            act = self._active
            if act is None:
                return
            self._active = None
            extra: dict[str, Any] = {}
            try:
                done = self._KINDS[act.window.kind][1](self, act.targets, act.groups,
                                                       act.window)
                if isinstance(done, dict):  # what the heal did, for the end event
                    extra.update(done)
            except Exception as exc:
                log.exception("healing %s failed", act.window.nemesis)
                extra["error"] = repr(exc)
            self._emit(act.window, "end", act.targets, act.groups, **extra)

    # ------------------------------------------------------ primitive faults

    def _kill(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self._killed.add(t)
            self.backend.kill(t)

    def _restart(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        errors = []
        for t in targets:
            try:
                self.backend.start(t)
                self._killed.discard(t)
            except Exception as exc:  # restart the others anyway
                errors.append(f"{t}: {exc!r}")
        if errors:
            raise RuntimeError("; ".join(errors))

    def _pause(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self._paused.add(t)
            self.backend.pause(t)

    def _resume(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        for t in targets:
            self.backend.resume(t)
            self._paused.discard(t)

    def _partition(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        self.backend.partition([set(g) for g in groups])

    def _loss(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert w.percent is not None
        for t in targets:
            self.backend.loss(t, w.percent)

    def _heal(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        self.backend.heal()

    def _load(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert self.load_burst is not None
        self.load_burst(float(w.size or 0))

    def _nothing(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        """A burst runs its course; there is nothing to undo."""

    def _crash(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert self.crash_storm is not None
        self._note("killed", self.crash_storm(int(w.size or 0), w.seed))

    # ------------------------------------------------------------ power cuts

    def _note(self, key: str, value: Any) -> None:
        """Report `value` with the open window's start event."""
        if self._active is not None:
            self._active.extra[key] = value

    def _snapshot(self, why: str) -> dict[str, Any] | None:
        if self.log_snapshot is None:
            return None
        try:
            return {"after": why, **self.log_snapshot()}
        except Exception as exc:  # a failed read is reported, and must not stop the run
            log.exception("reading the replicas' logs failed")
            return {"after": why, "error": repr(exc)}

    def _power_cut(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        self._killed.update(targets)
        self.backend.power_cut(targets)
        self._note("logs", [self._snapshot(f"power cut of {', '.join(targets)}")])

    def _wait_leader(self, timeout: float, other_than: str | None = None) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                leader = self.leader_finder()
                if leader is not None and leader != other_than:
                    return leader
            time.sleep(0.05)
        return None

    def _power_election(self, targets: list[str], groups: list[list[str]],
                        w: FaultWindow) -> None:
        """Rounds of: stall the disk of a voter V (its fsyncs wait); SIGKILL the leader L;
        once another leader N shows (or 3 s pass), cut V's power and SIGKILL N; restart
        them all at once.

        A replica that syncs its vote before granting it cannot vote while its disk stalls,
        so no N is elected. One that grants without syncing elects N, then forgets the vote
        (and N's entries, whose sync was stalled) in the cut: L, back as a candidate in N's
        term with a log as long as V's, wins V's vote in that same term. Two leaders share
        a term (the `leaders` checker) and write different entries under it (Log Matching).
        """
        rng = random.Random(w.seed)
        reps, _ = replicas_agents([m.name for m in self.backend.members()])
        rounds: list[dict[str, Any]] = []
        snapshots: list[dict[str, Any] | None] = []
        self._note("rounds", rounds)
        self._note("logs", snapshots)
        old = targets[0] if targets else None
        for _ in range(w.size or 1):
            if old is None or old not in reps:
                old = self._wait_leader(5.0) or rng.choice(reps)
            victim = rng.choice([r for r in reps if r != old])
            self.backend.stall_disk(victim)
            try:
                self._killed.add(old)
                self.backend.kill(old)
                killed_at = time.monotonic()
                new = self._wait_leader(3.0, other_than=old)
                time.sleep(rng.uniform(0.0, 0.3))
            finally:
                self._killed.add(victim)
                self.backend.power_cut([victim])  # lifts the stall
            down = [old, victim]
            if new is not None and new not in down:
                self._killed.add(new)
                self.backend.kill(new)
                down.append(new)
            cut_after = round(time.monotonic() - killed_at, 3)
            snapshots.append(self._snapshot(f"power cut of {victim} in an election"))
            for name in down:
                self.backend.start(name)
                self._killed.discard(name)
            rounds.append({"killed_leader": old, "stalled_and_cut": victim,
                           "elected_while_stalled": new, "cut_after_s": cut_after,
                           "down": down})
            old = self._wait_leader(10.0)

    # ---------------------------------------------------------------- overload

    def _burst_and_kill(self, leader: str | None, count: int, seed: int) -> dict[str, Any]:
        """Scale the burst job to `count`, SIGKILL `leader` a seeded moment later (while the
        scale commits, is placed, or its processes start), restart it once another replica
        leads (or after 10 s)."""
        assert self.overload is not None
        rng = random.Random(seed)
        reps, _ = replicas_agents([m.name for m in self.backend.members()])
        if leader is None or leader not in reps:
            leader = self._wait_leader(5.0) or rng.choice(reps)
        self.overload(count)
        delay = rng.uniform(0.0, 1.5)
        time.sleep(delay)  # the fault's timing, drawn from the seed
        self._killed.add(leader)
        self.backend.kill(leader)
        killed_at = time.monotonic()
        new = self._wait_leader(10.0, other_than=leader)
        took = round(time.monotonic() - killed_at, 3)
        self.backend.start(leader)
        self._killed.discard(leader)
        return {"count": count, "killed_leader": leader, "kill_after_s": round(delay, 3),
                "next_leader": new, "next_leader_after_s": took}

    def _overload_up(self, targets: list[str], groups: list[list[str]],
                     w: FaultWindow) -> None:
        for k, v in self._burst_and_kill(targets[0] if targets else None, int(w.size or 0),
                                         w.seed).items():
            self._note(k, v)

    def _overload_down(self, targets: list[str], groups: list[list[str]],
                       w: FaultWindow) -> dict[str, Any]:
        # Whoever leads now is killed, not the window's first leader (back as a follower).
        return self._burst_and_kill(self._wait_leader(5.0), 0, w.seed + 1)

    # -------------------------------------------------------------- membership

    # A replica retired meanwhile (removed from the cluster) is neither killed nor restarted.
    def kill_member(self, name: str) -> None:
        if any(m.name == name for m in self.backend.members()):
            self._killed.add(name)
            self.backend.kill(name)

    def restart_member(self, name: str) -> None:
        if any(m.name == name for m in self.backend.members()):
            self.backend.start(name)
        self._killed.discard(name)

    def _change(self, targets: list[str], groups: list[list[str]], w: FaultWindow) -> None:
        assert self.membership is not None
        for k, v in self.membership.start(self, w, targets, groups).items():
            self._note(k, v)

    def _change_end(self, targets: list[str], groups: list[list[str]],
                    w: FaultWindow) -> dict[str, Any]:
        assert self.membership is not None
        return self.membership.end(self)

    Action = Callable[["Nemesis", list[str], list[list[str]], FaultWindow], object]
    _KINDS: dict[str, tuple[Action, Action]] = {
        K_KILL: (_kill, _restart),
        K_RESTART_ALL: (_kill, _restart),
        K_PAUSE: (_pause, _resume),
        K_PARTITION: (_partition, _heal),
        K_LOSS: (_loss, _heal),
        K_LOAD: (_load, _nothing),
        K_CRASH: (_crash, _nothing),
        K_POWER: (_power_cut, _restart),
        K_POWER_ELECTION: (_power_election, _restart),
        K_OVERLOAD: (_overload_up, _overload_down),
        K_MEMBERSHIP: (_change, _change_end),
    }

    # ----------------------------------------------------------- final heal

    def final_heal(self) -> dict[str, Any]:
        """Undo everything: end the open window, resume, restart, remove network faults.

        Thread-safe and idempotent. Returns what it did; members found dead that no fault
        killed are reported as `unexpected_dead` (a crash worth looking at) and restarted.
        """
        self._end()
        with self._lock:
            done: dict[str, Any] = {"resumed": [], "restarted": [], "unexpected_dead": [],
                                    "errors": []}
            caps = set(self.backend.capabilities)
            for m in self.backend.members():
                try:
                    if not self.backend.alive(m.name):
                        if m.name not in self._killed:
                            done["unexpected_dead"].append(m.name)
                        self.backend.start(m.name)
                        done["restarted"].append(m.name)
                    elif PAUSE in caps:
                        # SIGCONT is harmless to a running process, and catches any pause
                        # whose bookkeeping was lost to an error.
                        self.backend.resume(m.name)
                        if m.name in self._paused:
                            done["resumed"].append(m.name)
                except Exception as exc:
                    done["errors"].append(f"{m.name}: {exc!r}")
            self._killed.clear()
            self._paused.clear()
            if caps & {PARTITION, LOSS}:
                try:
                    self.backend.heal()
                except Exception as exc:
                    done["errors"].append(f"heal: {exc!r}")
            if self.membership is not None:
                try:
                    done["membership"] = self.membership.settle(self)
                except Exception as exc:
                    done["errors"].append(f"membership: {exc!r}")
            if done["restarted"] or done["resumed"] or done["errors"] or "membership" in done:
                ev = {"t": self.clock(), "wall": time.time(), "fault": "final-heal",
                      "kind": "heal", "phase": "end",
                      "targets": done["restarted"] + done["resumed"], **done}
                with contextlib.suppress(Exception):
                    self.on_event(ev)
            return done

