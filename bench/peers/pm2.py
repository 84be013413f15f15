"""PM2 (npm, in the bench cache's prefix, run by the machine's node): its daemon ("God")
forks itself away, so its pid is read from PM2_HOME/pm2.pid, adopted by the reaper and
stopped by pid after `pm2 kill`. PM2_HOME is a temporary directory per measurement."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.measure.crash import crash_argv, crash_latencies, starts_recorded
from bench.measure.procs import Reaper
from bench.peers.base import Log, PeerStatus, npm_peer
from bench.peers.daemon import Figures, ManySettings, measure_many, sleeps_running
from tests.integration.harness import wait_for


def find(cache: Path, install: bool, log: Log) -> PeerStatus:
    return npm_peer("pm2", "pm2", cache, install, log)


class Pm2:
    def __init__(self, exe: Path, root: Path, reaper: Reaper) -> None:
        self.exe, self.root, self.reaper = exe, root, reaper
        self.home = root / "pm2home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PM2_HOME": str(self.home)}
        self.pid = 0

    def cli(self, *args: str, timeout: float = 120) -> None:
        with open(self.root / "cli.log", "ab") as out:
            done = subprocess.run([str(self.exe), *args], stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=self.env, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"pm2 {' '.join(args)} failed (rc {done.returncode}); see "
                               f"{self.root / 'cli.log'}")

    def start(self) -> None:
        try:
            self.cli("ping", timeout=60)  # spawns the daemon
        finally:
            pidfile = self.home / "pm2.pid"
            if pidfile.exists():
                self.pid = int(pidfile.read_text().strip())
                self.reaper.adopt("pm2 daemon", self.pid)
        if not self.pid:
            raise RuntimeError("pm2 daemon did not write its pid file")

    def ecosystem(self, apps: list[dict[str, Any]]) -> Path:
        path = self.root / "ecosystem.config.js"
        path.write_text("module.exports = " + json.dumps({"apps": apps}) + ";\n")
        return path

    def stop(self) -> None:
        if not self.pid:
            return
        try:
            self.cli("kill", timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired, OSError):
            pass  # stopped by pid below all the same
        self.reaper.stop(self.pid, timeout=20)
        self.pid = 0


@contextmanager
def pm2_in(exe: Path, root: Path, reaper: Reaper) -> Iterator[Pm2]:
    pm = Pm2(exe, root, reaper)
    try:
        pm.start()
        yield pm
    finally:
        pm.stop()


def app(name: str, argv: list[str], **opts: Any) -> dict[str, Any]:
    # interpreter none: run the program itself, not under node
    return {"name": name, "script": argv[0], "args": argv[1:], "interpreter": "none",
            "autorestart": True, "restart_delay": 0, **opts}


def crash(peer: PeerStatus, root: Path, crash_py: Path, crashes: int,
          reaper: Reaper) -> list[float]:
    assert peer.exe is not None
    record = root / "crash.txt"
    with pm2_in(peer.exe, root, reaper) as pm:
        # min_uptime 0 and a huge max_restarts: never count a crash as "unstable" and stop
        eco = pm.ecosystem([app("crash", crash_argv(crash_py, record), min_uptime=0,
                                max_restarts=1_000_000)])
        pm.cli("start", str(eco))
        wait_for(lambda: starts_recorded(record) > crashes, 30 + 3 * crashes,
                 interval=0.1, what=f"{crashes} pm2 restarts")
    return crash_latencies(record)[:crashes]


def many(peer: PeerStatus, root: Path, s: ManySettings, reaper: Reaper) -> Figures:
    """N apps in one ecosystem file, `pm2 start` (its CLI) until N `sleep` run."""
    assert peer.exe is not None
    with pm2_in(peer.exe, root, reaper) as pm:
        eco = pm.ecosystem([app(f"s{i:04d}", ["sleep", "3600"]) for i in range(s.n)])
        return measure_many(pm.pid, lambda: pm.cli("start", str(eco), timeout=s.limit_s),
                            sleeps_running(pm.pid, s.n), s)
