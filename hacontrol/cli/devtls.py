"""The certificates of `hacontrol dev --tls`: a CA and one certificate per role under
`DATA/tls/`, made once and reused by later runs on the same data directory."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from hacontrol.tls.context import TLSConfig
from hacontrol.tls.files import private_dir
from hacontrol.tls.pki import CertFiles, create_ca, create_cert
from hacontrol.tls.roles import Role


@dataclass(frozen=True)
class DevPKI:
    root: Path

    @property
    def ca(self) -> Path:
        return self.root / "ca.pem"

    def cert(self, role: Role) -> Path:
        return self.root / f"{role.value}.pem"

    def key(self, role: Role) -> Path:
        return self.root / f"{role.value}-key.pem"

    def flags(self, role: Role) -> list[str]:
        """--tls-ca/--tls-cert/--tls-key for a daemon of `role`."""
        return ["--tls-ca", str(self.ca), "--tls-cert", str(self.cert(role)),
                "--tls-key", str(self.key(role))]

    def client(self) -> TLSConfig:
        """What a client of the dev cluster uses (the cli certificate)."""
        return TLSConfig(self.ca, self.cert(Role.CLI), self.key(Role.CLI))

    def env(self) -> dict[str, str]:
        """The CLI's environment for this cluster."""
        return {"HACONTROL_CACERT": str(self.ca),
                "HACONTROL_CLIENT_CERT": str(self.cert(Role.CLI)),
                "HACONTROL_CLIENT_KEY": str(self.key(Role.CLI))}


def ensure_dev_pki(data_dir: Path, hosts: list[str]) -> tuple[DevPKI, bool]:
    """The dev cluster's certificates, made if missing; True when anything was made."""
    pki = DevPKI(private_dir(data_dir / "tls"))
    ca = CertFiles(pki.ca, pki.root / "ca-key.pem")
    made = False
    if not (ca.cert.exists() and ca.key.exists()):
        # A new CA: certificates signed by an earlier one would not be trusted.
        for path in pki.root.glob("*.pem"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        create_ca(pki.root, "hacontrol dev CA")
        made = True
    for role in Role:
        if not (pki.cert(role).exists() and pki.key(role).exists()):
            for path in (pki.cert(role), pki.key(role)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            create_cert(ca, role, pki.root, hosts=hosts)
            made = True
    return pki, made
