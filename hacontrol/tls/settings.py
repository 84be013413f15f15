"""TLS settings as daemons take them from their flags, and the refusals that go with them."""

from __future__ import annotations

from pathlib import Path

from .context import TLSConfig
from .files import ExposedFile


class TLSSettingsError(Exception):
    """TLS settings a daemon must not start with; the message says what to change."""


def daemon_tls(ca: Path | None, cert: Path | None, key: Path | None, *,
               insecure: bool, who: str) -> TLSConfig | None:
    """The TLS settings of a daemon (`who`: "hacontrol server"), None for plain HTTP.

    Plain HTTP needs insecure=True (the --insecure-http flag); with TLS all three files
    are needed, must exist, and the key must be private to its owner.
    """
    given = [p for p in (ca, cert, key) if p is not None]
    if insecure:
        if given:
            raise TLSSettingsError(f"{who}: --insecure-http and --tls-* flags exclude "
                                   "each other")
        return None
    if ca is None or cert is None or key is None:
        raise TLSSettingsError(
            f"{who}: TLS settings are required (--tls-ca, --tls-cert and --tls-key; create "
            "them with `hacontrol tls ca create` and `hacontrol tls cert create`), or "
            "--insecure-http to serve plain HTTP, where tokens travel in clear text")
    config = TLSConfig(ca=ca, cert=cert, key=key)
    try:
        config.check()
    except (ValueError, OSError, ExposedFile) as exc:
        raise TLSSettingsError(f"{who}: {exc}") from None
    return config
