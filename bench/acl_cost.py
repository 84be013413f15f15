#!/usr/bin/env python3
"""What ACL checks cost a write: a management token against client tokens with 1 and 20
policies, on one 3-replica cluster, side by side in the same run.

    python bench/acl_cost.py [--runs 3] [--writes 300] [--clients 64] [--seconds 5]

A management token skips the policy walk; a client token is authorised against its
policies twice per write (the API on the way in, the state inside apply on every replica).
The 20-policy token's grant is in its last policy, behind 19 namespace globs that do not
match, so every write walks all of them. Each round measures every token in a rotated
order: sequential write latency to the leader (p50) and the throughput of `--clients`
keep-alive clients (bench/controllers.py's measures). Medians over the rounds, and each
client token's ratio to the management token.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.controllers import measure_latency, measure_throughput  # noqa: E402
from bench.measure.clusters import cluster_in  # noqa: E402
from tests.integration.harness import Cluster  # noqa: E402

GRANT = {"rules": {"namespaces": {"default": {"policy": "write"}}}}


def client_token(c: Cluster, name: str, policies: list[str]) -> str:
    resp = c.write("POST", "/v1/acl/tokens", {"name": name, "policies": policies})
    assert resp.status == 200, resp
    return str(resp.body["token"]["secret_id"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--writes", type=int, default=300)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="hacontrol-acl-bench-") as tmp, \
            cluster_in(Path(tmp) / "c") as c:
        for i in range(19):
            rules = {"rules": {"namespaces": {f"team-{i}-*": {"policy": "write"}}}}
            assert c.write("PUT", f"/v1/acl/policies/other-{i}", rules).status == 200
        assert c.write("PUT", "/v1/acl/policies/grant", GRANT).status == 200
        tokens = {"management": c.token,
                  "client, 1 policy": client_token(c, "one", ["grant"]),
                  "client, 20 policies": client_token(
                      c, "twenty", [f"other-{i}" for i in range(19)] + ["grant"])}
        names = list(tokens)
        p50: dict[str, list[float]] = {n: [] for n in names}
        tput: dict[str, list[float]] = {n: [] for n in names}
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                lead = c.leader()
                tag = name.split(",")[-1].strip().replace(" ", "-")
                lat = measure_latency(c, lead, args.writes, f"{tag}-{run}", tokens[name])
                tp = asyncio.run(measure_throughput(c, lead, args.clients, args.seconds,
                                                    token=tokens[name]))
                p50[name].append(lat["p50_ms"])
                tput[name].append(tp["writes_per_s"])
                # Errors are shown, not fatal: a loaded machine times writes out (503).
                print(f"run {run + 1} {name:20s} p50 {lat['p50_ms']:6.2f} ms  "
                      f"{tp['writes_per_s']:7.0f} writes/s  errors {lat['errors']} / "
                      f"{tp['errors'] or 0}", file=sys.stderr, flush=True)
        base_p50 = statistics.median(p50["management"])
        base_tp = statistics.median(tput["management"])
        print(f"\nmedians of {args.runs} runs, 3 replicas, leader, fsync on; "
              f"throughput with {args.clients} clients")
        print(f"{'token':22s} {'write p50 ms':>12s} {'vs mgmt':>8s} {'writes/s':>9s} "
              f"{'vs mgmt':>8s}")
        for name in names:
            m50, mtp = statistics.median(p50[name]), statistics.median(tput[name])
            print(f"{name:22s} {m50:12.2f} {m50 / base_p50:8.2f} {mtp:9.0f} "
                  f"{mtp / base_tp:8.2f}")


if __name__ == "__main__":
    main()
