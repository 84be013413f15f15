#!/usr/bin/env python3
"""Where the agent's time goes: py-spy profiles of a real agent, one per phase.

    python bench/agent_profile.py [--out DIR] [--crashes 20] [--small 200] [--large 1000]
                                  [--idle] [--idle-s S]

One 3-replica cluster and one agent (tests/integration/harness.py), driven through the API
as `bench.compare` does: the crash program restarted by the agent (phase "crash"), then
`sleep 3600` x small (phase "start-small"), with `--idle-s` S seconds of those running
("idle", with the agent's CPU over them), then x large on the same agent ("start-large").
py-spy samples the agent (all threads, idle frames included, 200 Hz) during each phase
and writes `<phase>.txt` (collapsed stacks, `-f raw`) and a summary of the top frames by
own and by inclusive time to stdout. Needs `pip install py-spy`. Everything started is
stopped on the way out.
"""

from __future__ import annotations

import argparse
import collections
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.measure.clusters import cluster_in  # noqa: E402
from bench.measure.crash import (  # noqa: E402
    CRASH_PROGRAM,
    crash_argv,
    crash_latencies,
    starts_recorded,
)
from bench.measure.procs import descendants, log, process_cpu_s  # noqa: E402
from tests.integration.harness import Cluster, wait_for  # noqa: E402

NS = "default"


class Spy:
    def __init__(self, pid: int, path: Path, idle: bool) -> None:
        exe = Path(sys.executable).with_name("py-spy")
        argv = [str(exe), "record", "-p", str(pid), "-r", "200", "-f", "raw", "--threads", "--nonblocking",
                "-o", str(path)]
        if idle:
            argv.append("--idle")
        self.path = path
        self.popen = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        self.popen.send_signal(signal.SIGINT)
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def summarize(path: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{path.name}: {total} samples"]
    out.append("  own:")
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    return "\n".join(out)


class Timeline:
    """When the agent's children reached 1 %, 50 % and 100 % of `n` (polled every 20 ms)."""

    def __init__(self, pid: int, n: int, t0: float) -> None:
        self.pid, self.n, self.t0 = pid, n, t0
        self.reached: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        proc = psutil.Process(self.pid)
        while not self._stop.wait(0.02) and 100 not in self.reached:
            k = len(proc.children())
            for p in (1, 50, 100):
                if p not in self.reached and k >= self.n * p / 100:
                    self.reached[p] = time.perf_counter() - self.t0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self) -> str:
        return ", ".join(f"{p} % at {t:.2f} s" for p, t in sorted(self.reached.items()))


def cpu_s(pid: int) -> float:
    """CPU seconds of `pid` and of its children it has reaped (user + system)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system



def running(cluster: Cluster, job: str) -> int:
    return sum(1 for a in cluster.allocs(job, replica=cluster.leader())
               if a["state"] == "running" and a.get("desired", "run") == "run")


def delete(cluster: Cluster, job: str, agent_pid: int) -> None:
    assert cluster.write("DELETE", f"/v1/jobs/{NS}/{job}").status == 200
    wait_for(lambda: not descendants(agent_pid), 120, interval=0.1, what=f"{job} gone")


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--crashes", type=int, default=20)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=1000)
    ap.add_argument("--idle", action="store_true", help="include idle frames (waits)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--idle-s", type=float, default=0.0,
                    help="after the small start, profile the agent idle for this long")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hac-agent-profile-"))
    out = args.out or tmp
    out.mkdir(parents=True, exist_ok=True)
    crash_py = tmp / "crash.py"
    crash_py.write_text(CRASH_PROGRAM)
    with cluster_in(tmp / "cluster") as cluster:
        agent = cluster.start_agent("n1", cpu=max(64.0, args.large + 8),
                                    memory_mb=max(100_000, (args.large + 64) * 16))
        wait_for(lambda: any(nd["name"] == "n1" for nd in cluster.api(
            "GET", "/v1/nodes", replica=cluster.leader()).body["nodes"]), 30,
            what="agent registered")
        rec = tmp / "crash.txt"
        spy = Spy(agent.pid, out / "crash.txt", args.idle)
        body = {"command": crash_argv(crash_py, rec), "count": 1,
                "resources": {"cpu": 1.0, "memory_mb": 64},
                "restart": {"policy": "always", "backoff_s": 0, "backoff_max_s": 0,
                            "max_restarts": 1_000_000, "window_s": 1, "min_uptime_s": 0}}
        assert cluster.write("PUT", f"/v1/jobs/{NS}/crash", body).status == 200
        wait_for(lambda: starts_recorded(rec) > args.crashes, 30 + 3 * args.crashes,
                 interval=0.1, what="restarts")
        spy.stop()
        lat = sorted(crash_latencies(rec))
        log(f"crash -> restart: p50 {lat[len(lat) // 2]:.1f} ms over {len(lat)}")
        delete(cluster, "crash", agent.pid)
        for phase, n in (("start-small", args.small), ("start-large", args.large)):
            spy = Spy(agent.pid, out / f"{phase}.txt", args.idle)
            body = {"command": ["sleep", "3600"], "count": n,
                    "resources": {"cpu": 1.0, "memory_mb": 16},
                    "restart": {"policy": "on-failure", "backoff_s": 0, "backoff_max_s": 0}}
            t0 = time.perf_counter()
            cpu0 = cpu_s(agent.pid)
            assert cluster.write("PUT", f"/v1/jobs/{NS}/{phase}", body).status == 200
            marks = Timeline(agent.pid, n, t0)
            wait_for(lambda n=n, phase=phase: running(cluster, phase) >= n, 300, interval=0.05,
                     what=f"{n} running")
            marks.stop()
            log(f"{phase}: {n} running after {time.perf_counter() - t0:.2f} s; agent CPU "
                f"{cpu_s(agent.pid) - cpu0:.2f} s (itself and reaped children); "
                f"processes of the agent: {marks.describe()}")
            spy.stop()
            if phase == "start-small" and args.idle_s > 0:
                spy = Spy(agent.pid, out / "idle.txt", args.idle)
                t1, cpu1 = time.perf_counter(), process_cpu_s(agent.pid)
                time.sleep(args.idle_s)  # the phase is a length of time, not a condition
                used = process_cpu_s(agent.pid) - cpu1
                log(f"idle with {n} running: agent CPU {used * 1000:.0f} ms over "
                    f"{time.perf_counter() - t1:.1f} s = "
                    f"{100 * used / (time.perf_counter() - t1):.2f} % of a core")
                spy.stop()
            delete(cluster, phase, agent.pid)
    for phase in ("crash", "start-small", "idle", "start-large"):
        path = out / f"{phase}.txt"
        if path.exists():
            print(summarize(path, args.top))
    log(f"profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
