"""Certificate rotation without a restart (SIGHUP).

A daemon keeps the `ssl.SSLContext`s it made at start (its listening side, its client side)
and, on reload, loads the files' current contents into those same objects: every handshake
reads its context, so each new connection uses the new certificate, while connections
already open keep theirs until they close. Nothing else needs to know.

The new files are checked first, in a context of their own (key matching the certificate,
a CA that parses, a key others cannot read), so a half-written or mismatched pair leaves the
running contexts as they were. A CA can only be added to a context (OpenSSL has no
removal): a CA added to the bundle is trusted at once, one taken out of it stays trusted
until the next restart.
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .context import TLSConfig


@dataclass
class LiveContexts:
    """The contexts a daemon serves and connects with, made from `config`."""

    config: TLSConfig
    # Contexts that present config.cert (listening sides, clients with a certificate).
    with_cert: list[ssl.SSLContext] = field(default_factory=list)
    # Contexts that only trust config.ca.
    trust_only: list[ssl.SSLContext] = field(default_factory=list)

    def reload(self, new: TLSConfig) -> str:
        """Load `new` into every context; what the log should say. Raises ValueError,
        OSError, ssl.SSLError or files.ExposedFile, with the contexts untouched."""
        new.check()
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.load_verify_locations(str(new.ca))
        if new.cert is not None and new.key is not None:
            probe.load_cert_chain(str(new.cert), str(new.key))
        elif self.with_cert:
            raise ValueError("a certificate and key are needed: this daemon presents one")
        for ctx in self.with_cert:
            assert new.cert is not None and new.key is not None
            ctx.load_cert_chain(str(new.cert), str(new.key))
        for ctx in (*self.with_cert, *self.trust_only):
            ctx.load_verify_locations(str(new.ca))
        self.config = new
        return describe(new)


def describe(config: TLSConfig) -> str:
    """Which certificate `config` names: serial, expiry and a short fingerprint."""
    if config.cert is None:
        return f"CA {config.ca}"
    cert = x509.load_pem_x509_certificate(config.cert.read_bytes())
    digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()[:16]
    # not_valid_after_utc since cryptography 42 (the naive one is deprecated there).
    until = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after
    return (f"certificate {config.cert} (serial {cert.serial_number:x}, sha256 {digest}, "
            f"valid until {until:%Y-%m-%d %H:%M} UTC), CA {config.ca}")

