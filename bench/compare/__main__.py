"""hacontrol next to etcd, supervisord, circus and PM2: same machine, same workload, one run.

    python -m bench.compare [--quick] [--runs N] [--json] [--profile] [--only cp|agents]

Each run measures every available system in turn (the order alternates between runs);
the table shows, per figure, each system's median over the runs, hacontrol's ratio to the
best peer and which direction is better, and each run's values under it. Peers are found
in (or installed into) a cache outside the repository; a missing one is reported and its
column left empty. See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.compare import agents, controlplane
from bench.measure.crash import CRASH_PROGRAM
from bench.measure.procs import Reaper, log
from bench.measure.table import BASELINE, HACONTROL, Row, format_table, row_summary
from bench.peers import circus, etcd, pm2, supervisord
from bench.peers.base import PeerStatus, default_cache

REPO = Path(__file__).resolve().parents[2]
AGENT_PEERS: dict[str, Any] = {"supervisord": supervisord, "circus": circus, "pm2": pm2}


def discover(cache: Path, install: bool, want_cp: bool, want_agents: bool
             ) -> dict[str, PeerStatus]:
    found: dict[str, PeerStatus] = {}
    if want_cp:
        found["etcd"] = etcd.find(install, log)
    if want_agents:
        for name, module in AGENT_PEERS.items():
            found[name] = module.find(cache, install, log)
    for st in found.values():
        log(("peer " if st.available else "skipped ") + st.describe())
    return found


class Profiler:
    """py-spy flame graphs (svg) of hacontrol's processes, saved in the output folder."""

    def __init__(self, out: Path, reaper: Reaper) -> None:
        self.out, self.reaper = out, reaper
        self.exe = Path(sys.executable).with_name("py-spy")
        self.files: list[str] = []
        self.run = 0

    def __call__(self, pid: int, name: str) -> Callable[[], None]:
        path = self.out / f"flame-run{self.run}-{name}.svg"
        popen = self.reaper.spawn("py-spy", [str(self.exe), "record", "-p", str(pid), "-r",
                                             "100", "--nonblocking", "-o", str(path)],
                                  self.out / "py-spy.log")

        def stop() -> None:
            self.reaper.stop(popen.pid, sig=signal.SIGINT)  # it writes the svg on SIGINT
            if path.exists():
                self.files.append(str(path))
            else:
                log(f"py-spy wrote no {path.name}; see {self.out / 'py-spy.log'}")
        return stop


def one_run(run: int, args: argparse.Namespace, peers: dict[str, PeerStatus],
            cp_rows: dict[str, Row], ag_rows: dict[str, Row], tmp: Path, reaper: Reaper,
            profiler: Profiler | None) -> None:
    root = tmp / f"run{run}"
    crash_py = tmp / "crash.py"
    steps: list[tuple[str, Callable[[], None]]] = []
    if args.only in (None, "cp"):
        s = cp_settings(args)
        steps.append(("hacontrol control plane", lambda: controlplane.run_hacontrol(
            root / "cp-hac", s, cp_rows, profiler)))
        if peers["etcd"].available:
            steps.append(("etcd", lambda: controlplane.run_etcd(
                peers["etcd"], root / "cp-etcd", s, cp_rows, reaper)))
    if args.only in (None, "agents"):
        a = agent_settings(args)
        steps.append(("hacontrol agent", lambda: agents.run_hacontrol(
            root / "ag-hac", crash_py, a, ag_rows, profiler)))
        if args.baseline is not None:
            steps.append(("hacontrol agent (baseline)", lambda: agents.run_hacontrol(
                root / "ag-base", crash_py, a, ag_rows, None, args.baseline.resolve())))
        for name, module in AGENT_PEERS.items():
            if peers[name].available:
                steps.append((name, functools.partial(
                    agents.run_peer, name, module, peers[name], root / f"ag-{name}", crash_py,
                    a, ag_rows, reaper)))
    # Alternate the order between runs so neither side always runs on a warmer (or more
    # crowded) machine; within the control-plane and agent groups alike.
    if run % 2 == 0:
        steps.reverse()
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # one system failing must not lose the others' figures
            log(f"run {run}: {name} failed: {exc!r}")
            reaper.stop_all()


def cp_settings(args: argparse.Namespace) -> controlplane.CpSettings:
    if args.quick:
        return controlplane.CpSettings(clients=64, seconds=2.0, warmup=0.5, latency_ops=100,
                                       failover_trials=3)
    return controlplane.CpSettings(clients=64, seconds=10.0, warmup=1.0, latency_ops=500,
                                   failover_trials=10)


def agent_settings(args: argparse.Namespace) -> agents.AgentSettings:
    if args.quick:
        s = agents.AgentSettings(crashes=5, small=200, large=1000, settle_s=2.0, idle_s=3.0,
                                 limit_s=45.0)
    else:
        s = agents.AgentSettings(crashes=40, small=200, large=1000, settle_s=2.0,
                                 idle_s=10.0, limit_s=120.0)
    s.instance_cpu = args.instance_cpu
    return s


def systems(rows: dict[str, Row], names: list[str]) -> list[str]:
    seen = {n for r in rows.values() for n in r.runs}
    return [n for n in names if n in seen]


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare",
                                 description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=None, help="runs (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true",
                    help="1 run, short loads, 3 failover trials, 5 crashes (about 5 minutes)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--profile", action="store_true",
                    help="py-spy flame graphs (svg) of hacontrol's leader and agent")
    ap.add_argument("--only", choices=("cp", "agents"), help="only one group of rows")
    ap.add_argument("--no-install", action="store_true", help="never install a missing peer")
    ap.add_argument("--cache", type=Path, default=default_cache(),
                    help="where peers are installed (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None,
                    help="folder for table.txt, results.json and flame graphs "
                         "(default CACHE/results/<time>)")
    ap.add_argument("--instance-cpu", type=float, default=1.0,
                    help="cores of each hacontrol instance (its CFS quota)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another checkout (e.g. of main): its hacontrol is measured too, "
                         f"as {BASELINE}, in the same runs (agent rows)")
    args = ap.parse_args()
    runs = args.runs if args.runs is not None else 1 if args.quick else 3
    out = args.out or args.cache / "results" / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    # Measured as installed: pip writes a package's bytecode when it installs it (the peers'
    # too), but a checkout run with PYTHONDONTWRITEBYTECODE compiled every module at each
    # start, a quarter of a replica's start-up CPU (bench/README.md, "Bytecode").
    for tree in [REPO, *([args.baseline.resolve()] if args.baseline is not None else [])]:
        compileall.compile_dir(tree / "hacontrol", quiet=1)
    peers = discover(args.cache, not args.no_install, args.only in (None, "cp"),
                     args.only in (None, "agents"))
    reaper = Reaper()
    profiler = Profiler(out, reaper) if args.profile else None
    if profiler and not profiler.exe.exists():
        log(f"--profile: no {profiler.exe} (pip install py-spy); not profiling")
        profiler = None
    cp_rows = controlplane.make_rows(cp_settings(args).clients)
    ag_rows = agents.make_rows(agent_settings(args))
    tmp = Path(tempfile.mkdtemp(prefix="hacontrol-compare-"))
    (tmp / "crash.py").write_text(CRASH_PROGRAM)
    t0 = time.monotonic()
    try:
        for run in range(1, runs + 1):
            log(f"run {run}/{runs}")
            if profiler:
                profiler.run = run
            one_run(run, args, peers, cp_rows, ag_rows, tmp, reaper, profiler)
    except KeyboardInterrupt:
        log("interrupted; stopping everything started")
        return 130
    finally:
        reaper.stop_all()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    cp_sys = systems(cp_rows, [HACONTROL, "etcd"])
    ag_sys = systems(ag_rows, [HACONTROL, BASELINE, *AGENT_PEERS])
    result = {
        "runs": runs, "quick": bool(args.quick), "wall_seconds": round(time.monotonic() - t0),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "commit": git_commit()},
        "peers": {n: {"available": p.available, "version": p.version,
                      "missing": p.missing} for n, p in peers.items()},
        "control_plane": [row_summary(r) for r in cp_rows.values() if r.runs],
        "agents": [row_summary(r) for r in ag_rows.values() if r.runs],
        "flame_graphs": profiler.files if profiler else [],
    }
    text = render(result, list(cp_rows.values()), cp_sys, list(ag_rows.values()), ag_sys)
    (out / "table.txt").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1) if args.json else text)
    log(f"saved in {out}")
    return 0


def render(result: dict[str, Any], cp_rows: list[Row], cp_sys: list[str],
           ag_rows: list[Row], ag_sys: list[str]) -> str:
    parts = [f"{result['runs']} run(s) in {result['wall_seconds']} s on "
             f"{result['machine']['cpus']} cpus, commit {result['machine']['commit']}; "
             "medians over runs (the machine is shared: expect noise)"]
    for name, p in result["peers"].items():
        parts.append(f"  {name}: " + ((p["version"] or "?") if p["available"]
                                      else f"missing, skipped ({p['missing']})"))
    if any(r.runs for r in cp_rows):
        parts += ["", "Control plane (3 replicas / members on loopback, fsync on)",
                  format_table([r for r in cp_rows if r.runs], cp_sys)]
    if any(r.runs for r in ag_rows):
        parts += ["", "Node agent (100 % CPU = one core)",
                  format_table([r for r in ag_rows if r.runs], ag_sys)]
    if result["flame_graphs"]:
        parts += ["", "Flame graphs:", *(f"  {f}" for f in result["flame_graphs"])]
    return "\n".join(parts)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
