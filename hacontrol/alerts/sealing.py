"""Webhook secrets are sealed before they enter the log.

Secrets never enter the log in the clear (docs/architecture.md, "Security boundaries"), yet
the leader must sign with a webhook's secret. The replica that takes the rule seals the
secret with a Fernet key derived (HKDF, its own `info`) from the cluster secret, which
every replica holds on its disk and nothing in the state or the API carries; the leader
opens it only to sign. The log, snapshots and backups hold the sealed form only. Every key
of a rotating cluster secret opens what the others sealed (as the Raft port accepts every
listed key, docs/security-raft.md); the first seals.
"""

from __future__ import annotations

from dataclasses import replace

from cryptography.fernet import InvalidToken, MultiFernet

from hacontrol.model.alerts import SEALED_PREFIX, AlertRule, SinkType
from hacontrol.raft.cipher import fernet_key
from hacontrol.raft.keys import parse_secret

PREFIX = SEALED_PREFIX
_INFO = b"hacontrol alert sink secret v1"


class Unsealable(Exception):
    """A sealed secret no key of this cluster secret opens (sealed under a key rotated
    away, or by another cluster)."""


class Sealer:
    def __init__(self, cluster_secret: str) -> None:
        self._fernet = MultiFernet([fernet_key(k.salt, k.key, _INFO)
                                    for k in parse_secret(cluster_secret)])

    def seal(self, secret: str) -> str:
        if secret.startswith(PREFIX):
            return secret  # sealed already (a rule read back from a snapshot, say)
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def seal_rule(self, rule: AlertRule) -> AlertRule:
        """`rule` with every webhook secret sealed."""
        sinks = tuple(replace(s, secret=self.seal(s.secret))
                      if s.type == SinkType.WEBHOOK and s.secret is not None else s
                      for s in rule.sinks)
        return replace(rule, sinks=sinks)

    def open(self, stored: str) -> str:
        """The secret as the user gave it; a secret stored in the clear (written without a
        sealer, as unit tests do) is returned as it is."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX):].encode()).decode()
        except (InvalidToken, ValueError):
            raise Unsealable("the webhook secret does not open with this cluster secret; "
                             "apply the rule again with its secret") from None
