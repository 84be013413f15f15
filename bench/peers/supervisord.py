"""supervisord (pip, in the bench cache's venv): one `supervisord -n` per measurement,
queried over XML-RPC on a loopback port (so this interpreter needs no supervisor import)."""

from __future__ import annotations

import textwrap
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.measure.crash import crash_argv, crash_latencies, starts_recorded
from bench.measure.procs import Reaper
from bench.peers.base import Log, PeerStatus, pip_peer
from bench.peers.daemon import Figures, ManySettings, measure_many
from tests.integration.harness import free_ports, wait_for


def find(cache: Path, install: bool, log: Log) -> PeerStatus:
    return pip_peer("supervisord", "supervisor", "supervisord", cache, install, log)


class Supervisord:
    """One `supervisord -n` child with its config and logs in `root`."""

    def __init__(self, exe: Path, root: Path, programs: str, reaper: Reaper) -> None:
        self.exe, self.root, self.reaper = exe, root, reaper
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.conf = root / "supervisord.conf"
        self.conf.write_text(textwrap.dedent(f"""\
            [inet_http_server]
            port=127.0.0.1:{self.port}

            [supervisord]
            nodaemon=true
            logfile={root}/supervisord.log
            pidfile={root}/supervisord.pid
            childlogdir={root}/logs
            minfds=4096

            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

        """) + programs)
        self.pid = 0

    def rpc(self) -> Any:
        return xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")

    def start(self) -> None:
        popen = self.reaper.spawn("supervisord", [str(self.exe), "-n", "-c", str(self.conf)],
                                  self.root / "stdout.log")
        self.pid = popen.pid

        def up() -> bool:
            if popen.poll() is not None:
                raise RuntimeError(f"supervisord exited: {self.tail()}")
            return bool(self.rpc().supervisor.getState()["statename"] == "RUNNING")
        wait_for(up, 20, what="supervisord up")

    def states(self) -> list[str]:
        return [p["statename"] for p in self.rpc().supervisor.getAllProcessInfo()]

    def tail(self) -> str:
        f = self.root / "supervisord.log"
        return f.read_text()[-2000:] if f.exists() else ""

    def stop(self) -> None:
        if self.pid:
            self.reaper.stop(self.pid, timeout=30)  # SIGTERM: it stops its programs first
            self.pid = 0


@contextmanager
def supervisord_in(exe: Path, root: Path, programs: str, reaper: Reaper
                   ) -> Iterator[Supervisord]:
    sd = Supervisord(exe, root, programs, reaper)
    try:
        sd.start()
        yield sd
    finally:
        sd.stop()


def crash(peer: PeerStatus, root: Path, crash_py: Path, crashes: int,
          reaper: Reaper) -> list[float]:
    assert peer.exe is not None
    record = root / "crash.txt"
    programs = textwrap.dedent(f"""\
        [program:crash]
        command={' '.join(crash_argv(crash_py, record))}
        autostart=true
        autorestart=true
        startsecs=0
        startretries=1000000
        exitcodes=0
        redirect_stderr=true
        stdout_logfile={root}/logs/crash.log
    """)
    with supervisord_in(peer.exe, root, programs, reaper):
        wait_for(lambda: starts_recorded(record) > crashes, 30 + 3 * crashes,
                 interval=0.1, what=f"{crashes} supervisord restarts")
    return crash_latencies(record)[:crashes]


def many(peer: PeerStatus, root: Path, s: ManySettings, reaper: Reaper) -> Figures:
    """N programs configured with autostart=false; startAllProcesses until all RUNNING."""
    assert peer.exe is not None
    programs = textwrap.dedent(f"""\
        [program:s]
        command=sleep 3600
        process_name=%(program_name)s_%(process_num)04d
        numprocs={s.n}
        autostart=false
        autorestart=true
        startsecs=0
        redirect_stderr=true
        stdout_logfile={root}/logs/%(program_name)s_%(process_num)04d.log
    """)
    with supervisord_in(peer.exe, root, programs, reaper) as sd:
        figs = measure_many(sd.pid, lambda: sd.rpc().supervisor.startAllProcesses(False),
                            lambda: sd.states().count("RUNNING") == s.n, s)
    return figs  # supervisord was stopped, with its N programs, on leaving the block
