"""Following a job after `hacontrol job run`: live progress until its deployment ends.

The CLI polls the job (one linearizable read with its allocations) and judges each answer
with `judge`, a pure function: the version it submitted has succeeded when `count` of its
allocations run and are healthy (or completed, for batch work) and no rolling update is
still under way; it has failed when one of its allocations failed (its restart policy gave
up, or its node was lost), when its deployment failed, or when the job moved on to another
version (an automatic revert). Anything else is still in progress, until a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from hacontrol.cli import colour, output
from hacontrol.cli.client import RETRY_STATUSES, Client, ClientError

POLL_S = 0.5
DEFAULT_DEADLINE_S = 300.0  # the rolling update's default deadline_s
_FAILED = ("failed", "lost")


@dataclass(frozen=True)
class Progress:
    version: int
    desired: int
    placed: int = 0
    running: int = 0
    healthy: int = 0
    complete: int = 0
    failed: int = 0
    pending_reason: str | None = None

    def line(self, painted: bool = False) -> str:
        """One line of counts, terminal-safe; `painted` colours each state that has
        allocations (a red "failed 0" would alarm for nothing)."""
        def n(state: str, count: int) -> str:
            return f"{colour.word(state) if painted and count else state} {count}"
        done = f", {n('complete', self.complete)}" if self.complete else ""
        text = (f"version {self.version}: placed {self.placed}/{self.desired}, "
                f"{n('running', self.running)}, {n('healthy', self.healthy)}{done}, "
                f"{n('failed', self.failed)}")
        if self.pending_reason:
            pending = colour.word("pending") if painted else "pending"
            text += f" ({pending}: {output.terminal_safe(self.pending_reason)})"
        return text


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


def progress_of(job: Mapping[str, Any], version: int) -> Progress:
    """Counts over the allocations of `version` (those of other versions are being
    replaced, and say nothing about this one)."""
    placed = running = healthy = complete = failed = 0
    reason = None
    for a in job.get("allocations") or ():
        if a.get("version") != version:
            continue
        state = a.get("state")
        if a.get("desired") != "run" and state not in _FAILED:
            continue
        placed += a.get("node") is not None
        running += state == "running"
        healthy += state == "running" and a.get("health") in (None, "healthy")
        complete += state == "complete"
        failed += state in _FAILED
        if state == "pending" and reason is None:
            reason = a.get("pending_reason")
    return Progress(version, int(job.get("count") or 0), placed, running, healthy, complete,
                    failed, reason)


def _failure(job: Mapping[str, Any], version: int) -> str | None:
    for a in job.get("allocations") or ():
        if a.get("version") == version and a.get("state") in _FAILED:
            why = a.get("message") or a.get("reason") or a.get("state")
            code = a.get("exit_code")
            exit_text = f", exit code {code}" if code is not None else ""
            return f"allocation {a.get('id')} {a.get('state')}: {why}{exit_text}"
    return None


def judge(job: Mapping[str, Any], version: int) -> Verdict | None:
    """The outcome of the deployment of `version`, or None while it is still going on."""
    now = job.get("version")
    if now != version:
        return Verdict(False, f"the job is now at version {now}: version {version} was "
                              f"replaced (an automatic revert, or another submission)")
    dep = job.get("deployment") or {}
    if dep.get("version") == version and dep.get("status") == "failed":
        return Verdict(False, f"deployment failed: {dep.get('message') or 'no reason given'}")
    failure = _failure(job, version)
    if failure is not None:
        return Verdict(False, failure)
    if dep.get("status") == "running":
        return None
    p = progress_of(job, version)
    if job.get("status") == "complete" or p.healthy + p.complete >= p.desired:
        what = "complete" if p.complete and not p.healthy else "running and healthy"
        return Verdict(True, f"{p.healthy + p.complete} of {p.desired} allocations {what}")
    return None


def deadline_of(job: Mapping[str, Any]) -> float:
    update = job.get("update")
    if isinstance(update, Mapping) and isinstance(update.get("deadline_s"), int | float):
        return float(update["deadline_s"])
    return DEFAULT_DEADLINE_S


def watch(client: Client, path: str, version: int, out: IO[str], err: IO[str], *,
          tty: bool, timeout_s: float | None = None,
          clock: Callable[[], float] = time.monotonic) -> int:
    """Show progress on `out` until the deployment of `version` ends; 0 when it
    succeeded, 1 (with the reason on `err`) when it failed or the deadline passed. States
    are coloured where `out` (or `err`) is a terminal that takes colour."""
    painted = colour.enabled(out)
    start = clock()
    shown = ""
    deadline: float | None = None if timeout_s is None else start + timeout_s
    while True:
        try:
            job = dict((client.get(path) or {}).get("job") or {})
        except ClientError as exc:
            # The client has retried and failed over already; a cluster that is electing a
            # leader or out of reach is waited for until the deadline, anything else ends it.
            if exc.status not in (0, *RETRY_STATUSES) or clock() >= (
                    deadline if deadline is not None else start + DEFAULT_DEADLINE_S):
                raise
            client.sleep(POLL_S)
            continue
        if deadline is None:
            deadline = start + deadline_of(job)
        progress = progress_of(job, version)
        line = progress.line()
        if line != shown:
            # On a terminal the line is redrawn in place; elsewhere each change is a line.
            text = progress.line(painted)
            out.write(f"\r\x1b[K{text}" if tty else text + "\n")
            out.flush()
            shown = line
        verdict = judge(job, version)
        if verdict is None and clock() >= deadline:
            verdict = Verdict(False, f"timed out after {clock() - start:.0f}s; {line}")
        if verdict is not None:
            if tty:
                out.write("\n")
            if verdict.ok:
                out.write(output.human(f"Deployment of version {version} "
                                       f"succeeded: {verdict.message}", out) + "\n")
                return 0
            err.write(output.human(f"error: deployment of version {version} failed: "
                                   f"{verdict.message}", err) + "\n")
            return 1
        client.sleep(POLL_S)
