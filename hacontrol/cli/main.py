"""The ``hacontrol`` command line: the top-level parser, built from the command groups
in ``cli/commands/``, and the dispatch to their handlers.

`hacontrol agent` builds a parser of its own group only, and nothing here imports what
client commands need until one runs: the agent's process keeps what it imports for as long
as it runs (months), next to the processes it supervises.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hacontrol import __version__
from hacontrol.cli import config
from hacontrol.cli.commands import group, groups
from hacontrol.cli.commands.base import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    connection_options,
)

if TYPE_CHECKING:
    from hacontrol.cli.client import Client
    from hacontrol.cli.transport import Transport
    from hacontrol.tls.context import TLSConfig

__all__ = ["build_parser", "main", "make_client", "resolve_token", "run_client_command",
           "tls_from_env"]

# Commands whose process loads only their own group.
LEAN_COMMANDS = frozenset({"agent"})
# The top-level options that take a value (any unambiguous prefix of them does too).
_VALUED = ("--addr", "--token", "--token-file")


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it: $COLUMNS if positive,
    else the terminal's, else 80."""
    try:
        if (given := int(os.environ["COLUMNS"])) > 0:
            return given
    except (KeyError, ValueError):
        pass
    try:
        out = sys.__stdout__
        return (os.get_terminal_size(out.fileno()).columns if out else 0) or 80
    except (AttributeError, ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter, told the width. Left to find it, argparse imports
    shutil for every parser it builds, and shutil imports zlib, bz2 and lzma: 0.5 MB an
    agent would keep for as long as it runs."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         _columns() - 2 if width is None else width)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser with that formatter; its subparsers are Parsers too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; `only`: with that command alone (a lean daemon's)."""
    parser: argparse.ArgumentParser = Parser(
        prog="hacontrol", description="A highly available control plane for processes."
    )
    parser.add_argument("--version", action="version", version=f"hacontrol {__version__}")
    connection_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if only is not None:
        group(only).register(sub)
        return parser
    for g in groups():
        g.register(sub)
    from hacontrol.cli.commands import completion

    completion.register(sub, parser)
    return parser


def command_named(argv: Sequence[str]) -> str | None:
    """The command a command line names: its first word that is neither a top-level
    option nor such an option's value (None: none, or past a `--`)."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return None
        if word.startswith("-"):
            if "=" not in word and len(word) > 2 and any(v.startswith(word) for v in _VALUED):
                next(words, None)
            continue
        return word
    return None


def main(argv: Sequence[str] | None = None, *, transport: Transport | None = None) -> int:
    """Run one command line; the exit code. `transport` replaces the network (tests)."""
    given = list(sys.argv[1:] if argv is None else argv)
    command = command_named(given)
    if argv is None and command == "agent":
        from hacontrol.agent.arenas import limit_arenas

        limit_arenas()  # may execute the agent again, with fewer malloc arenas
    build: Callable[[], argparse.ArgumentParser] = (
        partial(build_parser, command) if command in LEAN_COMMANDS else build_parser)
    parser = build()
    try:
        args = parser.parse_args(given)
    except SystemExit as exc:
        # argparse exits on --help/--version (0) and on bad usage (2); callers of
        # main() want a return code, not an exception.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if config.is_daemon(args):
        # With its --config file under the command line; kept to re-read on SIGHUP.
        try:
            args = config.resolve(build, given, args)
        except config.ConfigError as exc:
            sys.stderr.write(f"error: hacontrol {args.command}: {exc}\n")
            return EXIT_USAGE
    # A daemon runs for months in this frame: its parser is rebuilt on a reload, not kept.
    del parser
    try:
        if hasattr(args, "run"):
            return int(args.run(args) or 0)
        return run_client_command(args, sys.stdout, sys.stderr, transport)
    except KeyboardInterrupt:
        return 130


def run_client_command(
    args: argparse.Namespace, out: IO[str], err: IO[str], transport: Transport | None = None
) -> int:
    """Run a parsed client command, writing its output to out and errors to err."""
    from hacontrol.cli import output
    from hacontrol.cli.client import ClientError

    try:
        client = make_client(args, transport)
        return int(args.handler(args, client, out))
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except ClientError as exc:  # its message may quote the server
        err.write(f"error: {output.terminal_safe(str(exc))}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # Output piped into `head` and friends; not worth a traceback.
        return EXIT_OK


def make_client(args: argparse.Namespace, transport: Transport | None = None) -> Client:
    from hacontrol.cli.client import DEFAULT_ADDR, Client, split_addrs
    from hacontrol.cli.transport import HttpTransport
    from hacontrol.tls.files import ExposedFile

    addr = getattr(args, "addr", None) or os.environ.get("HACONTROL_ADDR") or DEFAULT_ADDR
    if transport is None:
        try:
            transport = HttpTransport(tls=tls_from_env(os.environ))
        except (ValueError, OSError, ExposedFile) as exc:
            raise UsageError(f"TLS settings: {exc}") from None
    return Client(split_addrs(addr), token=resolve_token(args), transport=transport)


def tls_from_env(env: Mapping[str, str]) -> TLSConfig | None:
    """TLS settings from HACONTROL_CACERT, HACONTROL_CLIENT_CERT and HACONTROL_CLIENT_KEY;
    None without a CA (https then trusts the system's CAs)."""
    from hacontrol.tls.context import TLSConfig

    ca = env.get("HACONTROL_CACERT")
    cert, key = env.get("HACONTROL_CLIENT_CERT"), env.get("HACONTROL_CLIENT_KEY")
    if not ca:
        if cert or key:
            raise ValueError("HACONTROL_CLIENT_CERT/KEY need HACONTROL_CACERT")
        return None
    return TLSConfig(Path(ca), Path(cert) if cert else None, Path(key) if key else None)


def resolve_token(args: argparse.Namespace) -> str | None:
    token = getattr(args, "token", None)
    if token:
        return str(token)
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read token file {token_file}: {exc.strerror or exc}"
            ) from None
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return str(token)
    return os.environ.get("HACONTROL_TOKEN") or None
