"""`python -m chaos run|list|check`: see docs/chaos.md."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# The durability faults (no-fsync, vote-no-fsync) are caught by the power-loss nemeses.
PLANTS = ("stale-read", "quota-skip", "early-ack", "no-fsync", "vote-no-fsync")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run one nemesis against a fresh cluster and check it")
    r.add_argument("--nemesis", default="kill-leader")
    r.add_argument("--time", type=float, default=30.0, help="seconds of faults and load")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--backend", default="local", choices=("local", "netns", "compose"))
    r.add_argument("--plant", choices=PLANTS, default=None,
                   help="run the cluster with a deliberately planted bug")
    r.add_argument("--clients", type=int, default=8)
    r.add_argument("--replicas", type=int, default=3, help="controller replicas (3 or 5)")
    r.add_argument("--mode", default="control", choices=("control", "agents"),
                   help="control: jobs are never placed; agents: real agents run service "
                        "jobs whose processes are checked too")
    r.add_argument("--agents", type=int, default=0,
                   help="agents to start (agents mode: 2 when 0)")
    r.add_argument("--power-loss-fs", action=argparse.BooleanOptionalAction, default=None,
                   help="serve replicas' data dirs from power-loss mounts (default: only for "
                        "the power-loss nemeses)")
    r.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for every server, e.g. --server-arg=--unsafe-no-fsync")
    r.add_argument("--out", type=Path, default=None, help="results directory")
    r.add_argument("-v", "--verbose", action="store_true")
    sub.add_parser("list", help="name the nemeses")
    c = sub.add_parser("check", help="re-check a saved history.jsonl")
    c.add_argument("history", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else
                        logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    if args.cmd == "list":
        from .nemesis import list_nemeses
        for name, desc in list_nemeses().items():
            print(f"{name:20} {desc}")
        return 0
    if args.cmd == "check":
        from .history import History
        from .report import write_all
        from .runner import Run, RunConfig
        h = History.load(args.history)
        run = Run(RunConfig(nemesis=h.nemesis, seed=h.seed, backend=h.backend,
                            results_dir=args.history.parent))
        run.history = h
        summary = write_all(args.history.parent, h, run.check())
        print(json.dumps({k: v["valid"] for k, v in summary["checkers"].items()}))
        return 0 if summary["valid"] else 1

    from .runner import RunConfig, run
    from .workload import WorkloadConfig
    cfg = RunConfig(nemesis=args.nemesis, time_s=args.time, seed=args.seed,
                    backend=args.backend, plant=args.plant, clients=args.clients,
                    replicas=args.replicas,
                    results_dir=args.out, workload=WorkloadConfig(clients=args.clients),
                    mode=args.mode, agents=args.agents, power_loss_fs=args.power_loss_fs,
                    server_args=args.server_arg)
    summary, out = run(cfg)
    print(f"results: {out}")
    print(f"operations {summary['operations']} {summary['outcomes']}, "
          f"faults {summary['faults']}, convergence {summary['convergence_s']} s")
    for name, v in summary["checkers"].items():
        print(f"  {name:22} {'ok' if v['valid'] else 'VIOLATION'}  {v['summary']}")
    print("VALID" if summary["valid"] else "INVALID")
    return 0 if summary["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
