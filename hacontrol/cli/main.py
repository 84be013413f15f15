"""The ``hacontrol`` command line: the top-level parser, built from the command groups
in ``cli/commands/``, and the dispatch to their handlers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from hacontrol import __version__
from hacontrol.cli import config, output
from hacontrol.cli.client import DEFAULT_ADDR, Client, ClientError, split_addrs
from hacontrol.cli.commands import GROUPS, completion
from hacontrol.cli.commands.base import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    connection_options,
)
from hacontrol.cli.transport import HttpTransport, Transport
from hacontrol.tls.context import TLSConfig
from hacontrol.tls.files import ExposedFile

__all__ = ["build_parser", "main", "make_client", "resolve_token", "run_client_command",
           "tls_from_env"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hacontrol", description="A highly available control plane for processes."
    )
    parser.add_argument("--version", action="version", version=f"hacontrol {__version__}")
    connection_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.register(sub)
    completion.register(sub, parser)
    return parser


def main(argv: Sequence[str] | None = None, *, transport: Transport | None = None) -> int:
    """Run one command line; the exit code. `transport` replaces the network (tests)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help/--version (0) and on bad usage (2); callers of
        # main() want a return code, not an exception.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if config.is_daemon(args):
        # With its --config file under the command line; kept to re-read on SIGHUP.
        try:
            args = config.resolve(build_parser, list(sys.argv[1:] if argv is None else argv),
                                  args)
        except config.ConfigError as exc:
            sys.stderr.write(f"error: hacontrol {args.command}: {exc}\n")
            return EXIT_USAGE
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
