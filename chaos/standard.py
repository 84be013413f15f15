"""The standard set: every nemesis at least once, then every planted fault; a table at the end.

Nemeses that act on agents (kill-agent, partition-agent, crash-storm, node-loss, overload) run
in agents mode with 2 agents; the others in control-plane mode. The power-loss nemeses and the
durability faults they catch come next (replicas on power-loss mounts, chaos.lazyfs), then the
overload bursts and the membership changes last, so every earlier run keeps the seed it had
before they existed.

`python -m chaos.standard [--time S] [--backend netns|local] [--power-only]` (what `make
chaos` and `make chaos-power` run).
Exit status 0 when every clean run is valid and every planted run is caught.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .nemesis import AGENT_NEMESES, POWER_NEMESES, list_nemeses
from .runner import RESULTS, RunConfig, run

# Which nemesis exposes which planted fault fastest (see docs/chaos.md).
PLANTED = (("stale-read", "pause"), ("quota-skip", "kill-leader"),
           ("early-ack", "partition-leader"))
# Durability faults: acknowledged entries never fsynced are lost when every replica loses
# power; a vote never fsynced is granted twice in one term when its voter loses power.
PLANTED_DURABILITY = (("no-fsync", "power-loss-all"), ("vote-no-fsync", "power-loss-election"))
# Nemeses added after the durability runs: last, in this order, so no earlier run changes
# seed.
LATER = ("overload", "membership")


def server_plants() -> tuple[str, ...]:
    """The planted faults this build of the server knows."""
    from hacontrol import planted
    return tuple(planted.PLANTS) + tuple(getattr(planted, "STORAGE_PLANTS", ()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m chaos.standard")
    p.add_argument("--time", type=float, default=90.0, help="seconds per nemesis")
    p.add_argument("--backend", default="netns", choices=("netns", "local"))
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--only", nargs="*", default=None, help="nemeses to run (default: all)")
    p.add_argument("--no-plants", action="store_true")
    p.add_argument("--power-only", action="store_true",
                   help="only the power-loss nemeses and the durability faults they catch")
    args = p.parse_args(argv)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = RESULTS / f"standard-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    names = args.only or [n for n in list_nemeses() if n not in AGENT_NEMESES
                          and n not in POWER_NEMESES and n not in LATER]
    plans: list[tuple[str, str | None]] = [(n, None) for n in names]
    if not args.no_plants:
        plans += [(nem, plant) for plant, nem in PLANTED]
    if args.only is None:
        # Last, so the control-plane runs and planted faults keep the seeds they had.
        plans += [(n, None) for n in list_nemeses() if n in AGENT_NEMESES and n not in LATER]
        plans += [(n, None) for n in list_nemeses() if n in POWER_NEMESES]
        if not args.no_plants:
            plans += [(nem, plant) for plant, nem in PLANTED_DURABILITY]
        plans += [(n, None) for n in LATER]
    if args.power_only:
        plans = [(n, None) for n in list_nemeses() if n in POWER_NEMESES]
        if not args.no_plants:
            plans += [(nem, plant) for plant, nem in PLANTED_DURABILITY]
    known_plants = server_plants()
    ok = True
    for i, (nemesis, plant) in enumerate(plans):
        agents_mode = nemesis in AGENT_NEMESES
        backend = args.backend
        if backend == "local" and nemesis.startswith(("partition", "netem")):
            continue
        cfg = RunConfig(nemesis=nemesis, time_s=args.time if not plant else min(args.time, 30),
                        seed=args.seed + i, backend=backend, plant=plant,
                        results_dir=root / f"{i:02d}-{nemesis}{'-' + plant if plant else ''}",
                        mode="agents" if agents_mode else "control",
                        agents=2 if agents_mode else 0,
                        # A ring of overlapping majorities needs five replicas.
                        replicas=5 if nemesis == "partition-ring" else 3)
        if plant is not None and plant not in known_plants:
            # The server cannot plant it yet: the set is not complete, and says so.
            rows.append({"nemesis": nemesis, "plant": plant, "mode": cfg.mode,
                         "error": f"pending: this server has no planted fault {plant!r}"})
            print(json.dumps(rows[-1]), flush=True)
            ok = False
            continue
        started = time.monotonic()
        try:
            summary, out = run(cfg)
        except Exception as exc:  # a run that cannot even finish is a failure of the set
            rows.append({"nemesis": nemesis, "plant": plant, "mode": cfg.mode,
                         "error": repr(exc)})
            ok = False
            continue
        caught = not summary["valid"]
        good = caught if plant else summary["valid"]
        ok = ok and good
        rows.append({"nemesis": nemesis, "plant": plant, "mode": cfg.mode, "seed": cfg.seed,
                     "operations": summary["operations"],
                     "unknown": summary["outcomes"]["unknown"],
                     "faults": summary["faults"], "valid": summary["valid"],
                     "failed_checkers": [k for k, v in summary["checkers"].items()
                                         if not v["valid"]],
                     "convergence_s": summary["convergence_s"],
                     "wall_s": round(time.monotonic() - started, 1), "path": str(out),
                     "as_expected": good})
        if "membership" in summary:
            rows[-1]["membership"] = summary["membership"]
        print(json.dumps(rows[-1]), flush=True)
    (root / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| nemesis | planted fault | seed | operations | unknown | faults | verdict | "
             "convergence (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['nemesis']} | {r['plant'] or '-'} | | | | | error: "
                         f"{r['error'][:80]} | |")
            continue
        verdict = ("valid" if r["valid"] else
                   ("caught: " + ", ".join(r["failed_checkers"])) if r["plant"] else
                   "**INVALID**: " + ", ".join(r["failed_checkers"]))
        lines.append(f"| {r['nemesis']} | {r['plant'] or '-'} | {r['seed']} | "
                     f"{r['operations']} | {r['unknown']} | {r['faults']} | {verdict} | "
                     f"{r['convergence_s']} |")
    table = "\n".join(lines) + "\n"
    (root / "summary.md").write_text(table)
    print(table)
    print(f"results: {root}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())



