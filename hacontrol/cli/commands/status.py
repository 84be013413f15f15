"""``hacontrol status``: the replica's view of the cluster."""

from __future__ import annotations

import argparse
from typing import IO

from hacontrol.cli import output
from hacontrol.cli.client import Client
from hacontrol.cli.commands.base import SubParsers, client_command, show


def register(sub: SubParsers) -> None:
    client_command(sub, "status", "show the replica's view of the cluster", cmd_status)


def cmd_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    status = client.get("/v1/status")
    return show(args, out, status, lambda: output.render_status(status))
