"""What every command group shares: exit codes, the handler signature, connection
flags, and small helpers for paths and answers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeAlias

from hacontrol.cli.addrs import DEFAULT_ADDR

if TYPE_CHECKING:
    from hacontrol.cli.client import Client

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
# Decoded JSON as served by the API (as `client.Json`).
Json = Any

# argparse keeps this class private, but it is what add_subparsers() returns.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler = Callable[[argparse.Namespace, "Client", IO[str]], int]
Runner = Callable[[argparse.Namespace], int]


class CommandGroup(Protocol):
    def register(self, sub: SubParsers) -> None: ...


class UsageError(Exception):
    """Bad arguments that argparse itself cannot detect."""


LOG_LEVELS = ["debug", "info", "warning", "error"]
LOG_FORMATS = ["text", "json"]  # as hacontrol.observe.logs.LOG_FORMATS


def connection_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    """--addr, --token and --token-file, offered before and after the subcommand."""
    # Below the top level the default is SUPPRESS so a subparser does not overwrite a
    # value given earlier.
    default: Any = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--addr",
        default=default,
        help="API URL(s), comma separated; default $HACONTROL_ADDR or " + DEFAULT_ADDR,
    )
    group.add_argument("--token", default=default, help="management token; default $HACONTROL_TOKEN")
    group.add_argument("--token-file", default=default, type=Path, help="file holding the token")


def client_command(
    parent: SubParsers, name: str, help_text: str, handler: Handler, json_flag: bool = True
) -> argparse.ArgumentParser:
    """A subcommand that talks to the API through the shared client."""
    p = parent.add_parser(name, help=help_text, description=help_text)
    connection_options(p, top_level=False)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.set_defaults(handler=handler)
    return p


def command_group(sub: SubParsers, name: str, help_text: str) -> SubParsers:
    """A command with subcommands of its own (``job run``, ``node drain``...)."""
    return sub.add_parser(name, help=help_text).add_subparsers(
        dest=f"{name}_command", metavar="SUBCOMMAND", required=True
    )


def show(args: argparse.Namespace, out: IO[str], result: Json,
         render: Callable[[], str]) -> int:
    """Print the raw answer with --json, otherwise what render() makes of it."""
    # Imported here: a daemon's process (`hacontrol agent`) imports this module too.
    from hacontrol.cli import output

    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.human(render(), out) + "\n")
    return EXIT_OK


def namespace_of(args: argparse.Namespace) -> str:
    return str(args.namespace or "default")


def job_path(ns: str, name: str) -> str:
    from hacontrol.cli.client import quote

    return f"/v1/jobs/{quote(ns)}/{quote(name)}"


def unwrap(result: Json, key: str) -> dict[str, Any]:
    """The object itself, whether bare or wrapped under its kind ({"node": {...}})."""
    if isinstance(result, dict) and isinstance(result.get(key), dict):
        return dict(result[key])
    return dict(result) if isinstance(result, dict) else {}


def index_suffix(result: Json) -> str:
    if isinstance(result, dict) and result.get("index") is not None:
        return f" (index {result['index']})"
    return ""


def missing_component(exc: ModuleNotFoundError, module: str) -> bool:
    """Whether exc says `module` itself (not one of its own imports) is absent."""
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))
