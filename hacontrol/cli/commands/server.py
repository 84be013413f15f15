"""``hacontrol server``: run one controller replica in the foreground."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from hacontrol.cli.commands.base import (
    EXIT_ERROR,
    EXIT_OK,
    LOG_FORMATS,
    LOG_LEVELS,
    SubParsers,
    missing_component,
)
from hacontrol.cli.commands.flags import (
    host_port,
    non_negative_int,
    peer_spec,
    positive_int,
    tls_options,
)
from hacontrol.cli.config import daemon_config


def register(sub: SubParsers) -> None:
    p = sub.add_parser("server", help="run a controller replica")
    p.add_argument("--id", required=True, help="this replica's id")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--raft", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--api", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        type=peer_spec,
        metavar="ID=RAFTHOST:PORT=http://APIHOST:PORT",
        help="another replica (repeat for each)",
    )
    p.add_argument("--join", default=None, metavar="URL[,URL...]",
                   help="ask the running cluster at these API URLs to add this replica "
                        "(needs --token-file with a token allowed operator writes); "
                        "ignored once the data directory records a membership")
    p.add_argument("--cleanup-dead-servers", action="store_true",
                   help="autopilot: the leader removes a replica silent for "
                        "--dead-server-after seconds (off by default)")
    p.add_argument("--min-quorum", type=positive_int, default=3,
                   help="autopilot never shrinks the cluster below this many replicas "
                        "(default 3)")
    p.add_argument("--dead-server-after", type=float, default=30.0, metavar="S",
                   help="autopilot: seconds of silence before a replica counts as dead "
                        "(default 30)")
    p.add_argument("--secret-file", required=True, type=Path)
    p.add_argument("--token-file", type=Path, default=None,
                   help="a secret that becomes the first management token; without it the "
                        "cluster starts locked until 'hacontrol acl bootstrap'")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="text lines (default) or one JSON object per line")
    p.add_argument("--compaction-entries", type=non_negative_int, default=None,
                   help="compact the Raft log after this many entries (default 5000)")
    p.add_argument("--plant", default=None, help=argparse.SUPPRESS)
    # Benchmarks only (bench/snapshot.py compares with 0 0): long applies (raft/long_apply.py).
    p.add_argument("--raft-heartbeat-before-bytes", type=non_negative_int, default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--raft-long-apply-grace", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--unsafe-no-fsync", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-grace", type=float, default=3.0,
                   help="seconds of silence before a node is marked down (default 3)")
    for flag, what in (("--max-body-bytes", "bytes in a request body (default 1 MiB; "
                                            "more is a 413)"),
                       ("--max-jobs", "jobs (default 10000; more is a 409 limit_exceeded)"),
                       ("--max-namespaces", "namespaces (default 1000)"),
                       ("--max-nodes", "nodes (default 5000)")):
        p.add_argument(flag, type=positive_int, default=None,
                       help=f"accept at most this many {what}")
    p.add_argument("--dns", type=host_port, default=None, metavar="HOST:PORT",
                   help="answer DNS (UDP) for NAME.service.hacontrol here: SRV and A records "
                        "of the service registry, with no token (off by default)")
    p.add_argument("--dns-namespace", action="append", default=None, metavar="NS",
                   help="a namespace DNS answers for (repeat; default: default)")
    tls_options(p, "replica")
    p.add_argument("--insecure-http", action="store_true",
                   help="serve plain HTTP without TLS (tokens travel in clear text); "
                        "only for tests and a cluster on one trusted machine")
    daemon_config(p)
    p.set_defaults(run=run_server)


def run_server(args: argparse.Namespace) -> int:
    try:
        from hacontrol.server import serve
    except ModuleNotFoundError as exc:
        if not missing_component(exc, "hacontrol.server"):
            raise
        print("error: the controller component (hacontrol.server) is not installed", file=sys.stderr)
        return EXIT_ERROR
    # Whatever the component returns: an exit code, or None for a clean stop.
    entry: Callable[[argparse.Namespace], object] = serve
    result = entry(args)
    return result if isinstance(result, int) else EXIT_OK
