"""`ssl.SSLContext`s for each side of each link, and the settings they are built from.

Clients check the peer's role through the server name they verify (`server_name(role)`):
pass it as `server_hostname` when connecting. Servers that need a client certificate read
the peer's role with `roles.peer_roles` and refuse the wrong one.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from .files import check_private


@dataclass(frozen=True)
class TLSConfig:
    """A CA bundle to trust and, optionally, this side's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def check(self) -> None:
        """Refuse missing files, a certificate without its key and a key others can read.

        Raises ValueError, FileNotFoundError or files.ExposedFile, each with a message
        naming the file.
        """
        if (self.cert is None) != (self.key is None):
            raise ValueError("a TLS certificate and its key go together: give both")
        for path in (self.ca, self.cert):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"TLS file {path} does not exist")
        if self.key is not None:
            if not self.key.is_file():
                raise FileNotFoundError(f"TLS key file {self.key} does not exist")
            check_private(self.key, "TLS key file")


def _base(purpose: ssl.Purpose, config: TLSConfig) -> ssl.SSLContext:
    config.check()
    ctx = ssl.create_default_context(purpose, cafile=str(config.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if config.cert is not None and config.key is not None:
        ctx.load_cert_chain(str(config.cert), str(config.key))
    return ctx


def server_context(config: TLSConfig, *, require_client_cert: bool) -> ssl.SSLContext:
    """What a listening side uses: its certificate, and the CA that client certificates
    must chain to (required, or only checked when one is sent)."""
    if config.cert is None:
        raise ValueError("a TLS server needs a certificate and a key")
    ctx = _base(ssl.Purpose.CLIENT_AUTH, config)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(config: TLSConfig) -> ssl.SSLContext:
    """What a connecting side uses: the CA the server must chain to, the server's name
    checked (give the role's name as server_hostname), and this side's certificate if any."""
    ctx = _base(ssl.Purpose.SERVER_AUTH, config)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
