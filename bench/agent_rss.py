#!/usr/bin/env python3
"""Resident memory of a running agent: this tree against an earlier revision, alternating.

    python bench/agent_rss.py --before REV [--runs N]

Each run starts `hacontrol dev --replicas 1 --agents 1` from the tree (REV is exported with
`git archive` into a temporary directory, and run with this environment's Python), waits
until the agent has joined, lets it run five seconds, reads its VmRSS, and stops the dev
cluster by its process group. Medians over the runs are printed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _agent_pid(parent: int) -> int | None:
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    for line in out.splitlines()[1:]:
        pid, ppid, args = line.split(None, 2)
        if int(ppid) == parent and " agent " in args:
            return int(pid)
    return None


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def agent_rss(tree: Path, port: int, data: Path) -> int:
    shutil.rmtree(data, ignore_errors=True)
    p = subprocess.Popen([sys.executable, "-m", "hacontrol", "dev", "--replicas", "1",
                          "--agents", "1", "--data-dir", str(data), "--api-port", str(port),
                          "--raft-port", str(port + 100), "--agent-port", str(port + 200)],
                         cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        pid = None
        while time.monotonic() < deadline:
            pid = pid or _agent_pid(p.pid)
            if pid and (data / "n1" / "node-credential").exists():
                break
            time.sleep(0.3)
        else:
            raise RuntimeError(f"the agent of {tree} did not join")
        time.sleep(5)  # the sampler and the link have run a few rounds
        return _rss_kb(pid)
    finally:
        os.killpg(p.pid, signal.SIGINT)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="git revision to compare with")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="hacontrol-rss-") as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        res: dict[str, list[int]] = {"before": [], "this tree": []}
        for _ in range(args.runs):
            res["before"].append(agent_rss(old, 9400, Path(tmp) / "d1"))
            res["this tree"].append(agent_rss(ROOT, 9500, Path(tmp) / "d2"))
        for name, values in res.items():
            print(f"{name:10} agent RSS {statistics.median(values) / 1024:6.1f} MB "
                  f"(median of {values} kB)")


if __name__ == "__main__":
    main()
