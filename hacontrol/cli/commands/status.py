"""``hacontrol status``: the replica's view of the cluster, and the cluster health score."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError
from hacontrol.cli.commands.base import SubParsers, client_command, show


def register(sub: SubParsers) -> None:
    client_command(sub, "status", "show the replica's view of the cluster", cmd_status)


def render_score(health: Mapping[str, Any]) -> str:
    """The score and each reason that lowers it, largest penalty first."""
    lines = [f"Health score: {output.format_number(health.get('score'))} / 100"]
    for r in health.get("reasons") or []:
        items = ", ".join(str(i) for i in r.get("items") or [])
        lines.append(f"  -{output.format_number(r.get('penalty'))}  {r.get('reason')}"
                     f" ({r.get('count')}{': ' + items if items else ''})")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    status = client.get("/v1/status")
    try:
        # Needs operator:read, and a replica that knows the route: without either the
        # status is shown as before, without a score. Stale: the score of a cluster without
        # a leader (no linearizable read) is the one most worth seeing.
        health = client.get("/v1/health/score", {"stale": "true"})
    except ClientError:
        health = None
    if not isinstance(health, dict) or not isinstance(health.get("score"), int | float):
        health = None
    shown = {**status, "health_score": health} if health is not None else status

    def render() -> str:
        text = output.render_status(status)
        return f"{text}\n\n{render_score(health)}" if health is not None else text
    return show(args, out, shown, render)
