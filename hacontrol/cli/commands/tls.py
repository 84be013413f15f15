"""``hacontrol tls``: a certificate authority and role certificates for a cluster.

``tls ca create`` writes ``ca.pem`` (give it to every member and client) and
``ca-key.pem``; ``tls cert create --server|--agent|--cli`` writes ``<role>.pem`` and
``<role>-key.pem`` signed by it. Keys are written 0600 and never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hacontrol.cli.commands.base import EXIT_ERROR, EXIT_OK, SubParsers, command_group
from hacontrol.cli.commands.flags import positive_int
from hacontrol.tls.files import ExposedFile
from hacontrol.tls.lifetimes import CA_DAYS, CERT_DAYS
from hacontrol.tls.roles import Role


def register(sub: SubParsers) -> None:
    tls = command_group(sub, "tls", "create a certificate authority and certificates")
    ca = command_group(tls, "ca", "the cluster's certificate authority")
    p = ca.add_parser("create", help="create a new CA (ca.pem, ca-key.pem)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to write (default .)")
    p.add_argument("--days", type=positive_int, default=CA_DAYS)
    p.add_argument("--common-name", default="hacontrol CA")
    p.set_defaults(run=run_ca_create)

    cert = command_group(tls, "cert", "certificates signed by the CA")
    p = cert.add_parser("create", help="create a certificate for one role")
    role = p.add_mutually_exclusive_group(required=True)
    for r, text in ((Role.SERVER, "a controller replica"), (Role.AGENT, "a node agent"),
                    (Role.CLI, "an operator's client")):
        role.add_argument(f"--{r.value}", dest="role", action="store_const", const=r,
                          help=f"for {text} (answers to {r.hostname})")
    p.add_argument("--ca", type=Path, default=Path("ca.pem"), help="CA certificate (ca.pem)")
    p.add_argument("--ca-key", type=Path, default=Path("ca-key.pem"),
                   help="CA key (ca-key.pem)")
    p.add_argument("--dir", type=Path, default=Path("."), help="where to write (default .)")
    p.add_argument("--name", default=None,
                   help="file name without .pem (default: the role, e.g. server)")
    p.add_argument("--host", action="append", default=[], metavar="NAME|IP",
                   help="another host name or address the certificate answers to (repeat)")
    p.add_argument("--days", type=positive_int, default=CERT_DAYS)
    p.set_defaults(run=run_cert_create)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


def run_ca_create(args: argparse.Namespace) -> int:
    # Imported here: cryptography adds 10 MB to every process the CLI starts, agents too.
    from hacontrol.tls import pki

    try:
        made = pki.create_ca(args.dir, args.common_name, args.days)
    except FileExistsError as exc:
        return _fail(f"{exc.filename} already exists; not overwriting it")
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror}")
    print(f"==> CA certificate: {made.cert}\n==> CA key: {made.key} (keep it secret)")
    return EXIT_OK


def run_cert_create(args: argparse.Namespace) -> int:
    from hacontrol.tls import pki

    role: Role = args.role
    try:
        made = pki.create_cert(pki.CertFiles(args.ca, args.ca_key), role, args.dir,
                               hosts=args.host, name=args.name, days=args.days)
    except FileExistsError as exc:
        return _fail(f"{exc.filename} already exists; not overwriting it")
    except ExposedFile as exc:
        return _fail(str(exc))
    except (OSError, ValueError) as exc:
        return _fail(f"{getattr(exc, 'filename', None) or ''} {exc}".strip())
    print(f"==> {role.value} certificate ({role.hostname}): {made.cert}\n"
          f"==> key: {made.key}")
    return EXIT_OK
