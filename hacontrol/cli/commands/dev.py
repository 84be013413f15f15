"""``hacontrol dev``: a local cluster in the foreground (the launcher is cli/dev.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hacontrol.cli.commands.base import LOG_FORMATS, LOG_LEVELS, SubParsers
from hacontrol.cli.commands.flags import non_negative_float, non_negative_int


def register(sub: SubParsers) -> None:
    p = sub.add_parser("dev", help="run a local cluster in the foreground")
    p.add_argument("--replicas", type=non_negative_int, default=3)
    p.add_argument("--agents", type=non_negative_int, default=1)
    p.add_argument("--data-dir", type=Path, default=Path(".hacontrol/dev"))
    p.add_argument("--api-port", type=non_negative_int, default=8100)
    p.add_argument("--raft-port", type=non_negative_int, default=7100)
    p.add_argument("--agent-port", type=non_negative_int, default=8200)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="text lines (default) or one JSON object per line")
    p.add_argument("--no-restart", action="store_true",
                   help="leave a replica or agent that dies down (reported either way); by "
                        "default it is restarted, after a backoff if it keeps dying")
    p.add_argument("--tls", action="store_true",
                   help="run every link over (mutual) TLS, with a CA and certificates "
                        "made under DATA/tls/ (clients trust DATA/tls/ca.pem)")
    p.add_argument(
        "--ready-timeout", type=non_negative_float, default=30.0, help=argparse.SUPPRESS
    )
    p.set_defaults(run=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    # Imported on use: the launcher pulls in process handling no other command needs.
    from hacontrol.cli.dev import run_dev as dev_main

    return dev_main(args)
