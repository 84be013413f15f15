"""``hacontrol namespace``: namespaces with their quotas and usage."""

from __future__ import annotations

import argparse
from typing import IO

from hacontrol.cli import output
from hacontrol.cli.client import Client, quote
from hacontrol.cli.commands.base import SubParsers, client_command, command_group, show, unwrap
from hacontrol.cli.commands.flags import non_negative_float, non_negative_int


def register(sub: SubParsers) -> None:
    ns = command_group(sub, "namespace", "manage namespaces and quotas")
    client_command(ns, "list", "list namespaces with quota and usage", cmd_namespace_list)
    p = client_command(ns, "status", "show one namespace", cmd_namespace_status)
    p.add_argument("namespace")
    p = client_command(
        ns, "set-quota", "set a namespace's quota (omitted limits are unlimited)", cmd_set_quota
    )
    p.add_argument("namespace")
    p.add_argument("--cpu", type=non_negative_float)
    p.add_argument("--memory-mb", type=non_negative_int)
    p.add_argument("--processes", type=non_negative_int)


def cmd_namespace_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/namespaces")
    return show(args, out, result,
                lambda: output.render_namespace_list(result.get("namespaces") or []))


def cmd_namespace_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/namespaces/{quote(args.namespace)}")

    def render() -> str:
        ns = unwrap(result, "namespace")
        ns.setdefault("name", args.namespace)
        return output.render_namespace(ns)

    return show(args, out, result, render)


def cmd_set_quota(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    quota = {"cpu": args.cpu, "memory_mb": args.memory_mb, "processes": args.processes}
    result = client.put(f"/v1/namespaces/{quote(args.namespace)}", {"quota": quota})

    def render() -> str:
        ns = unwrap(result, "namespace") or {"quota": quota}
        ns.setdefault("name", args.namespace)
        return output.render_namespace(ns)

    return show(args, out, result, render)
