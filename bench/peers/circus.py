"""circus (pip, in the bench cache's venv): `circusd` in the foreground per measurement,
controlled with `circusctl` over its loopback ZeroMQ endpoint."""

from __future__ import annotations

import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.measure.crash import crash_argv, crash_latencies, starts_recorded
from bench.measure.procs import Reaper
from bench.peers.base import Log, PeerStatus, pip_peer
from bench.peers.daemon import Figures, ManySettings, measure_many, sleeps_running
from tests.integration.harness import free_ports, wait_for


def find(cache: Path, install: bool, log: Log) -> PeerStatus:
    return pip_peer("circus", "circus", "circusd", cache, install, log)


class Circusd:
    def __init__(self, exe: Path, root: Path, watchers: str, reaper: Reaper) -> None:
        self.exe, self.root, self.reaper = exe, root, reaper
        root.mkdir(parents=True, exist_ok=True)
        ctl, pub, stats = free_ports(3)
        self.endpoint = f"tcp://127.0.0.1:{ctl}"
        self.conf = root / "circus.ini"
        self.conf.write_text(textwrap.dedent(f"""\
            [circus]
            endpoint = {self.endpoint}
            pubsub_endpoint = tcp://127.0.0.1:{pub}
            stats_endpoint = tcp://127.0.0.1:{stats}
            statsd = False

        """) + watchers)
        self.pid = 0

    def ctl(self, *args: str, timeout: float = 60) -> str:
        exe = self.exe.with_name("circusctl")
        done = subprocess.run([str(exe), "--endpoint", self.endpoint, "--timeout",
                               str(int(timeout)), *args], capture_output=True, text=True,
                              timeout=timeout + 10)
        if done.returncode != 0:
            raise RuntimeError(f"circusctl {' '.join(args)}: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        popen = self.reaper.spawn("circusd", [str(self.exe), str(self.conf)],
                                  self.root / "circusd.log")
        self.pid = popen.pid

        def up() -> bool:
            if popen.poll() is not None:
                raise RuntimeError("circusd exited: " + (self.root / "circusd.log").read_text()
                                   [-2000:])
            self.ctl("list", timeout=5)
            return True
        wait_for(up, 30, interval=0.1, what="circusd up")

    def stop(self) -> None:
        if self.pid:
            self.reaper.stop(self.pid, timeout=30)  # SIGTERM: it stops its watchers first
            self.pid = 0


@contextmanager
def circusd_in(exe: Path, root: Path, watchers: str, reaper: Reaper) -> Iterator[Circusd]:
    cd = Circusd(exe, root, watchers, reaper)
    try:
        cd.start()
        yield cd
    finally:
        cd.stop()


def crash(peer: PeerStatus, root: Path, crash_py: Path, crashes: int,
          reaper: Reaper) -> list[float]:
    assert peer.exe is not None
    record = root / "crash.txt"
    # respawn on (the default), max_retry -1: never give up on a program that keeps exiting
    watchers = textwrap.dedent(f"""\
        [watcher:crash]
        cmd = {' '.join(crash_argv(crash_py, record))}
        numprocesses = 1
        respawn = True
        max_retry = -1
    """)
    with circusd_in(peer.exe, root, watchers, reaper):
        # circus respawns on its arbiter's periodic check, 4-5 s per crash here: 3 s per
        # crash timed out in 2 of 3 quiet runs, so allow 6.
        wait_for(lambda: starts_recorded(record) > crashes, 30 + 6 * crashes,
                 interval=0.1, what=f"{crashes} circus restarts")
    return crash_latencies(record)[:crashes]


def many(peer: PeerStatus, root: Path, s: ManySettings, reaper: Reaper) -> Figures:
    """A watcher of N `sleep 3600` with autostart off; `circusctl start` until N run."""
    assert peer.exe is not None
    watchers = textwrap.dedent(f"""\
        [watcher:s]
        cmd = sleep 3600
        numprocesses = {s.n}
        autostart = False
    """)
    with circusd_in(peer.exe, root, watchers, reaper) as cd:
        def trigger() -> None:
            cd.ctl("start", "s", timeout=s.limit_s)
        return measure_many(cd.pid, trigger, sleeps_running(cd.pid, s.n), s)
