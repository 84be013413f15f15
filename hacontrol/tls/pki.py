"""A certificate authority and role certificates, made with the `cryptography` package.

Keys are ECDSA P-256 (fast handshakes, small files) and written 0600. Every certificate
carries its role's DNS name (see roles.py) plus the host names and addresses it is reached
at, so both role checks and ordinary host-name checks (curl, a browser) pass.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .files import read_private, write_private
from .lifetimes import CA_DAYS, CERT_DAYS
from .roles import Role

# Names every certificate answers to besides its role: a local cluster is reached there.
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")

# Which handshakes a role's certificate may take part in. Controllers and agents are each
# both server (their API) and client (the agent link; controllers calling agents); an
# operator's certificate is a client's only, so it can serve nothing.
USAGES: dict[Role, tuple[x509.ObjectIdentifier, ...]] = {
    Role.SERVER: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Role.AGENT: (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    Role.CLI: (ExtendedKeyUsageOID.CLIENT_AUTH,),
}


@dataclass(frozen=True)
class CertFiles:
    """Where a certificate and its private key were written."""

    cert: Path
    key: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path,
                key_path: Path) -> CertFiles:
    # The key first and exclusively: never overwrite one, never leave a cert without it.
    write_private(key_path, _key_pem(key), exclusive=True)
    try:
        with cert_path.open("xb") as f:
            f.write(_cert_pem(cert))
    except BaseException:
        key_path.unlink()
        raise
    return CertFiles(cert_path, key_path)


def create_ca(directory: Path, name: str = "hacontrol CA", days: int = CA_DAYS,
              prefix: str = "ca") -> CertFiles:
    """A new self-signed CA as `<prefix>.pem` and `<prefix>-key.pem` in `directory`.

    Existing files are never overwritten (FileExistsError).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True,
            content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write_pair(cert, key, directory / f"{prefix}.pem", directory / f"{prefix}-key.pem")


def _san(role: Role, hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(role.hostname)]
    seen = {role.hostname}
    for host in hosts:
        host = host.strip().strip("[]")
        if not host or host in seen:
            continue
        seen.add(host)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def create_cert(ca: CertFiles, role: Role, directory: Path, *, hosts: Iterable[str] = (),
                name: str | None = None, days: int = CERT_DAYS) -> CertFiles:
    """A certificate for `role`, signed by the CA in `ca`, as `<name>.pem` and
    `<name>-key.pem` in `directory` (name defaults to the role). It answers to the role's
    DNS name, the local host names, and `hosts` (names or IP addresses).

    The CA key must be private to its owner (ExposedFile otherwise); existing files are
    never overwritten (FileExistsError).
    """
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(read_private(ca.key, "CA key file"), None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{ca.key}: not an EC private key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    base = name or role.value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, role.hostname)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False,
            crl_sign=False, content_commitment=False, data_encipherment=False,
            key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(USAGES[role])), critical=False)
        .add_extension(_san(role, [*LOCAL_HOSTS, *hosts]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _write_pair(cert, key, directory / f"{base}.pem", directory / f"{base}-key.pem")
