"""``hacontrol node``: inspect nodes and drain them."""

from __future__ import annotations

import argparse
from typing import IO

from hacontrol.cli import output
from hacontrol.cli.client import Client, quote
from hacontrol.cli.commands.acl import register_intro
from hacontrol.cli.commands.base import (
    SubParsers,
    client_command,
    command_group,
    index_suffix,
    show,
    unwrap,
)
from hacontrol.cli.commands.flags import non_negative_float


def register(sub: SubParsers) -> None:
    node = command_group(sub, "node", "inspect nodes")
    client_command(node, "list", "list nodes", cmd_node_list)
    p = client_command(node, "status", "show one node", cmd_node_status)
    p.add_argument("name")
    p = client_command(node, "drain", "move allocations off a node, or stop doing so",
                       cmd_node_drain)
    p.add_argument("name")
    p.add_argument("--disable", action="store_true", help="end the drain")
    p.add_argument("--deadline", type=non_negative_float, default=60.0, metavar="S",
                   help="seconds before remaining allocations are stopped (default 60)")
    register_intro(node)


def cmd_node_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/nodes")
    return show(args, out, result, lambda: output.render_node_list(result.get("nodes") or []))


def cmd_node_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/nodes/{quote(args.name)}")

    def render() -> str:
        node = unwrap(result, "node")
        node.setdefault("name", args.name)
        return output.render_node(node)

    return show(args, out, result, render)


def cmd_node_drain(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    enable = not args.disable
    deadline: float | int = args.deadline
    if float(deadline).is_integer():
        deadline = int(deadline)
    result = client.post(
        f"/v1/nodes/{quote(args.name)}/drain", {"enable": enable, "deadline_s": deadline}
    )

    def render() -> str:
        if enable:
            return (f"Node {args.name} draining (deadline {output.format_number(deadline)}s)"
                    f"{index_suffix(result)}")
        return f"Node {args.name} drain disabled{index_suffix(result)}"

    return show(args, out, result, render)
