"""``hacontrol alloc`` (also ``allocation``): inspect allocations, control their
processes, print their output."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError, StreamBroken, quote
from hacontrol.cli.commands.base import (
    EXIT_OK,
    SubParsers,
    client_command,
    show,
    unwrap,
)
from hacontrol.cli.commands.flags import non_negative_int, signal_name

ACTION_DONE = {"pause": "paused", "resume": "resumed", "restart": "restarted",
               "signal": "signalled"}


def register(sub: SubParsers) -> None:
    # Users type `alloc`, as with `nomad alloc`; the full word is accepted too.
    allocation = sub.add_parser("alloc", aliases=["allocation"], help="inspect allocations")
    group = allocation.add_subparsers(dest="alloc_command", metavar="SUBCOMMAND",
                                      required=True)
    p = client_command(group, "list", "list allocations", cmd_allocation_list)
    p.add_argument("--namespace", "-n")
    p.add_argument("--job")
    p.add_argument("--node")
    p = client_command(group, "status", "show one allocation", cmd_allocation_status)
    p.add_argument("id")
    for action, help_text in (("pause", "pause an allocation's processes"),
                              ("resume", "resume a paused allocation"),
                              ("restart", "restart an allocation in place")):
        p = client_command(group, action, help_text, cmd_allocation_action)
        p.add_argument("id")
        p.set_defaults(action=action)
    p = client_command(group, "signal", "send a signal to an allocation", cmd_allocation_action)
    p.add_argument("id")
    p.add_argument("signal", type=signal_name, help="e.g. SIGHUP or HUP")
    p.set_defaults(action="signal")
    p = client_command(group, "logs", "print an allocation's output", cmd_allocation_logs,
                       json_flag=False)
    p.add_argument("id")
    p.add_argument("--stderr", action="store_true", help="standard error instead of output")
    p.add_argument("--tail", type=non_negative_int, default=100,
                   help="lines from the end to start with (default 100)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new output")


def cmd_allocation_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(
        "/v1/allocations", {"namespace": args.namespace, "job": args.job, "node": args.node}
    )
    return show(args, out, result,
                lambda: output.render_alloc_list(result.get("allocations") or []))


def cmd_allocation_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/allocations/{quote(args.id)}")
    return show(args, out, result,
                lambda: output.render_alloc(unwrap(result, "allocation")))


def cmd_allocation_action(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    body: dict[str, Any] = {}
    if args.action == "signal":
        body = {"signal": args.signal}
    result = client.post(f"/v1/allocations/{quote(args.id)}/{args.action}", body)

    def render() -> str:
        what = ACTION_DONE.get(args.action, args.action)
        if args.action == "signal":
            what += f" with {args.signal}"
        line = f"Allocation {args.id} {what}"
        allocation = result.get("allocation") if isinstance(result, dict) else None
        if isinstance(allocation, dict) and allocation.get("state"):
            line += f": state {allocation['state']}"
            if allocation.get("pid") is not None:
                line += f", pid {allocation['pid']}"
        return line

    return show(args, out, result, render)


def binary_out(out: IO[str]) -> Callable[[bytes], None]:
    """Write raw bytes to out's underlying buffer so log output passes through unchanged."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        def write_text(chunk: bytes) -> None:
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        return write_text
    out.flush()

    def write(chunk: bytes) -> None:
        buffer.write(chunk)
        buffer.flush()
    return write


def cmd_allocation_logs(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    query = {"stream": "stderr" if args.stderr else "stdout", "tail": args.tail,
             "follow": "true" if args.follow else "false"}
    write = binary_out(out)
    try:
        # A followed log may stay quiet for hours; without follow the body is finite.
        with client.stream(
            f"/v1/allocations/{quote(args.id)}/logs", query,
            read_timeout_s=None if args.follow else client.timeout_s,
        ) as stream:
            while chunk := stream.read_chunk():
                write(chunk)
            return EXIT_OK
    except StreamBroken as exc:
        raise ClientError(0, "stream_broken", f"log stream interrupted: {exc}") from None
    except KeyboardInterrupt:
        return EXIT_OK
