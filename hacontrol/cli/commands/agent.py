"""``hacontrol agent``: run one node agent in the foreground."""

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
    bind_host,
    label_pair,
    non_negative_float,
    non_negative_int,
    tls_options,
    url_list,
)
from hacontrol.cli.config import daemon_config


def register(sub: SubParsers) -> None:
    p = sub.add_parser("agent", help="run a node agent")
    p.add_argument("--name", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument(
        "--controllers", required=True, type=url_list, action="extend", metavar="URL[,URL...]"
    )
    p.add_argument("--token-file", type=Path, default=None,
                   help="a token that may write nodes; the agent introduces itself with it "
                        "(default $HACONTROL_TOKEN)")
    p.add_argument("--intro-token-file", type=Path, default=None,
                   help="an introduction token ('hacontrol node intro create'), exchanged "
                        "once for this node's credential (default $HACONTROL_INTRO_TOKEN)")
    p.add_argument("--port", type=non_negative_int, default=0)
    p.add_argument("--cpu", type=non_negative_float, default=None, help="CPU capacity to offer")
    p.add_argument("--memory-mb", type=non_negative_int, default=None, help="memory to offer")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                   help="text lines (default) or one JSON object per line")
    p.add_argument("--label", action="append", default=[], type=label_pair, metavar="KEY=VALUE",
                   help="a node label for placement constraints (repeat for each)")
    p.add_argument("--attribute", action="append", default=[], type=label_pair,
                   metavar="KEY=VALUE",
                   help="a node attribute, over the detected ones (os, arch, hostname, "
                        "kernel) (repeat for each)")
    p.add_argument("--bind", default="127.0.0.1", type=bind_host, metavar="HOST",
                   help="address the agent's own HTTP port listens on (default 127.0.0.1)")
    p.add_argument("--advertise", default=None, metavar="URL",
                   help="URL the controllers use to reach this agent (default: from --bind)")
    p.add_argument("--default-user", default=None, metavar="USER",
                   help="user for allocations whose job names none (default: nobody when "
                        "the agent runs as root, else the agent's own user)")
    tls_options(p, "agent")
    daemon_config(p)
    p.set_defaults(run=run_agent)


def run_agent(args: argparse.Namespace) -> int:
    try:
        from hacontrol.agent.main import run_agent as agent_main
    except ModuleNotFoundError as exc:
        if not missing_component(exc, "hacontrol.agent.main"):
            raise
        print("error: the agent component (hacontrol.agent.main) is not installed", file=sys.stderr)
        return EXIT_ERROR
    # Whatever the component returns: an exit code, or None for a clean stop.
    entry: Callable[[argparse.Namespace], object] = agent_main
    result = entry(args)
    return result if isinstance(result, int) else EXIT_OK
