"""``hacontrol operator config``: the cluster's replicated settings (for now the health
score's weights and thresholds), read and replaced live through the log.

``show`` prints every setting with its defaults filled in; ``apply FILE`` replaces the
config with the file's (JSON, YAML or TOML; settings left out take their defaults, as
``PUT /v1/operator/config`` does).
"""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client
from hacontrol.cli.commands.base import (
    SubParsers,
    UsageError,
    client_command,
    command_group,
    index_suffix,
    show,
)
from hacontrol.cli.jobfile import JobFileError, load_job_file, parse_job_text

PATH = "/v1/operator/config"


def register(sub: SubParsers) -> None:
    """Adds the ``config`` subcommands under ``operator``."""
    config = command_group(sub, "config", "the cluster's replicated settings")
    client_command(config, "show", "show the cluster config, defaults filled in",
                   cmd_config_show)
    p = client_command(config, "apply", "replace the cluster config from a file (applies "
                       "at once; settings left out take their defaults)", cmd_config_apply)
    p.add_argument("file", help="JSON, YAML or TOML, e.g. {\"health\": {\"node_down\": 20}}; "
                                "'-' reads standard input")


def render_config(config: dict[str, Any], is_set: bool) -> str:
    rows: list[list[Any]] = []
    for section, values in sorted(config.items()):
        if isinstance(values, dict):
            rows += [[f"{section}.{k}", v] for k, v in sorted(values.items())]
        else:
            rows.append([section, values])
    head = "" if is_set else "(never set: every value is the default)\n"
    return head + output.format_table(["SETTING", "VALUE"], rows)


def cmd_config_show(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(PATH)
    config = result.get("config") if isinstance(result, dict) else None
    return show(args, out, result, lambda: render_config(
        dict(config or {}), bool(isinstance(result, dict) and result.get("set"))))


def cmd_config_apply(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    try:
        body = (parse_job_text(sys.stdin.read(), "<stdin>") if args.file == "-"
                else load_job_file(args.file))
    except JobFileError as exc:
        raise UsageError(str(exc)) from None
    result = client.put(PATH, body)
    return show(args, out, result, lambda: f"Cluster config applied{index_suffix(result)}")
