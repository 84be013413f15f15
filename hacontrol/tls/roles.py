"""The three roles a certificate can hold, and how a peer's role is read back."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

DOMAIN = "hacontrol"


class Role(enum.StrEnum):
    SERVER = "server"  # a controller replica: serves the API, calls agents
    AGENT = "agent"  # a node agent: calls controllers, serves its own small API
    CLI = "cli"  # an operator's client: calls controllers only

    @property
    def hostname(self) -> str:
        """The DNS name every certificate of this role carries and peers verify."""
        return f"{self.value}.{DOMAIN}"


def roles_in(names: Iterable[str]) -> set[Role]:
    """The roles among a certificate's DNS names."""
    by_name = {r.hostname: r for r in Role}
    return {by_name[n] for n in names if n in by_name}


def peer_roles(peercert: Mapping[str, Any] | None) -> set[Role]:
    """The roles of a verified peer, from `SSLSocket.getpeercert()` (None or {} when the
    peer sent no certificate: no role)."""
    if not peercert:
        return set()
    sans = peercert.get("subjectAltName") or ()
    return roles_in(str(value) for kind, value in sans if kind == "DNS")
