"""``hacontrol service``: where the services of running jobs listen."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, quote
from hacontrol.cli.commands.base import SubParsers, client_command, namespace_of, show
from hacontrol.cli.commands.flags import non_negative_int

# How much longer than the blocking wait the client waits for the answer.
WAIT_MARGIN_S = 10.0
MAX_WAIT_S = 60.0  # as the API cuts it (api/service_routes.py)


def register(sub: SubParsers) -> None:
    service = sub.add_parser("service", help="find where services listen")
    group = service.add_subparsers(dest="service_command", metavar="SUBCOMMAND", required=True)
    p = client_command(group, "list", "list services and their endpoints", cmd_service_list)
    p.add_argument("--namespace", "-n", help="only this namespace (default: every one "
                                             "the token may see)")
    p = client_command(group, "show", "show one service's endpoints", cmd_service_show)
    p.add_argument("name")
    p.add_argument("--namespace", "-n")
    p.add_argument("--index", type=non_negative_int,
                   help="wait until the endpoints change after this index (a blocking query)")
    p.add_argument("--wait", default="30s", help="how long --index waits at most (e.g. 30s; "
                                                 f"at most {MAX_WAIT_S:g}s)")


def _seconds(wait: str) -> float:
    text = wait.strip()
    for unit, scale in (("ms", 0.001), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * scale
            except ValueError:
                return MAX_WAIT_S  # the API names the bad value
    try:
        return float(text)
    except ValueError:
        return MAX_WAIT_S


def cmd_service_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/services", {"namespace": args.namespace})
    services = result.get("services") if isinstance(result, dict) else None
    return show(args, out, result, lambda: render_service_list(services or []))


def cmd_service_show(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    query: dict[str, Any] = {}
    if args.index is not None:
        query = {"index": args.index, "wait": args.wait}
        client.timeout_s = max(client.timeout_s,
                               min(_seconds(args.wait), MAX_WAIT_S) + WAIT_MARGIN_S)
    result = client.get(f"/v1/services/{quote(namespace_of(args))}/{quote(args.name)}", query)
    body = result if isinstance(result, dict) else {}
    return show(args, out, result, lambda: render_service(body))


def render_service_list(services: Sequence[Mapping[str, Any]]) -> str:
    if not services:
        return "No services."
    rows = [[s.get("namespace"), s.get("name"), len(s.get("endpoints") or ()), s.get("index")]
            for s in services]
    return output.format_table(["NAMESPACE", "NAME", "ENDPOINTS", "INDEX"], rows)


def render_service(service: Mapping[str, Any]) -> str:
    head = (f"Service {service.get('namespace')}/{service.get('name')} "
            f"(index {service.get('index')})")
    endpoints = service.get("endpoints") or []
    if not endpoints:
        return head + "\nNo endpoints."
    rows = [[e.get("address"), e.get("port"), e.get("node"), e.get("allocation")]
            for e in endpoints]
    return head + "\n" + output.format_table(["ADDRESS", "PORT", "NODE", "ALLOCATION"], rows)
