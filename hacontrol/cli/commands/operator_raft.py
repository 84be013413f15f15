"""``hacontrol operator raft``: the controllers' membership, as ``nomad operator raft``.

``list-peers`` shows each member as the leader sees it; ``remove-peer ID`` removes a live or
dead replica (refused when it would leave no live majority, unless ``--force``). A replica
is added by starting it with ``hacontrol server --join URL``.
"""

from __future__ import annotations

import argparse
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, quote
from hacontrol.cli.commands.base import EXIT_OK, SubParsers, client_command, command_group, show


def register(sub: SubParsers) -> None:
    """Adds the ``raft`` subcommands under ``operator``."""
    raft = command_group(sub, "raft", "the controllers' Raft membership")
    client_command(raft, "list-peers", "list the controller replicas and their state",
                   cmd_list_peers)
    p = client_command(raft, "remove-peer", "remove a controller replica (live or dead)",
                       cmd_remove_peer)
    p.add_argument("id", help="the replica's id")
    p.add_argument("--force", action="store_true",
                   help="remove it even when that leaves fewer than a majority of the "
                        "remaining replicas alive")


def render_peers(peers: list[dict[str, Any]]) -> str:
    rows = []
    for p in peers:
        contact = p.get("last_contact_s")
        rows.append([p.get("id"), p.get("raft"), p.get("api"),
                     "voter" if p.get("voter") else "non-voter",
                     "leader" if p.get("leader") else "follower",
                     "alive" if p.get("alive") else "unreachable",
                     "-" if contact is None else f"{contact:.2f}s",
                     "-" if p.get("index_lag") is None else p.get("index_lag")])
    return output.format_table(["ID", "RAFT", "API", "VOTER", "ROLE", "STATE", "CONTACT",
                                "LAG"], rows)


def cmd_list_peers(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/operator/raft/peers")
    peers = result.get("peers") if isinstance(result, dict) else None
    return show(args, out, result, lambda: render_peers(list(peers or [])))


def cmd_remove_peer(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    path = f"/v1/operator/raft/peers/{quote(args.id)}"
    result = client.request("DELETE", path, query={"force": "true"} if args.force else None)
    if args.json:
        output.print_json(result, out)
    else:
        forced = " (forced)" if isinstance(result, dict) and result.get("forced") else ""
        out.write(output.terminal_safe(f"removed {args.id}{forced}") + "\n")
    return EXIT_OK
