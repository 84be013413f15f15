"""Argument value types shared by the command groups: each checks one flag's value and
raises argparse.ArgumentTypeError with what was expected."""

from __future__ import annotations

import argparse
from pathlib import Path

from hacontrol.cli.addrs import split_addrs


def host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def peer_spec(value: str) -> str:
    parts = value.split("=", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(
            f"expected ID=RAFTHOST:PORT=http://APIHOST:PORT, got {value!r}"
        )
    host_port(parts[1])
    if not parts[2].startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"peer API address must be a URL, got {parts[2]!r}")
    return value


def url_list(value: str) -> list[str]:
    urls = split_addrs(value)
    if not urls:
        raise argparse.ArgumentTypeError("expected at least one URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"expected an http:// URL, got {url!r}")
    return urls


def non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {n}")
    return n


def positive_int(value: str) -> int:
    n = non_negative_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def non_negative_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not f >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return f


def label_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    key = key.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def bind_host(value: str) -> str:
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # One colon is HOST:PORT (the port has its own flag); more is an IPv6 address.
    if not host or host.count(":") == 1 or any(c.isspace() or c in "/[]" for c in host):
        raise argparse.ArgumentTypeError(f"expected a host name or IP address, got {value!r}")
    return host


def signal_name(value: str) -> str:
    name = value.strip().upper()
    if name.isdigit():
        return name
    if not name.isalnum():
        raise argparse.ArgumentTypeError(f"expected a signal such as SIGHUP, got {value!r}")
    return name if name.startswith("SIG") else "SIG" + name


def tls_options(parser: argparse.ArgumentParser, what: str) -> None:
    """--tls-ca, --tls-cert and --tls-key for a daemon (`what` says whose certificate)."""
    group = parser.add_argument_group("TLS")
    group.add_argument("--tls-ca", type=Path, default=None, metavar="FILE",
                       help="CA certificate every peer's certificate must chain to")
    group.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                       help=f"this {what}'s certificate (from `hacontrol tls cert create`)")
    group.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                       help="its private key (must not be readable by others)")
