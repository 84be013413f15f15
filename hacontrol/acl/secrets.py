"""Token secrets: made here, never stored; the state keeps only their SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid


def new_secret() -> str:
    """256 random bits, URL-safe text (what a client sends as `Bearer <secret>`)."""
    return secrets.token_urlsafe(32)


def new_accessor() -> str:
    return str(uuid.uuid4())


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def accessor_for(secret_hash: str) -> str:
    """A stable accessor id for a configured secret, the same on every replica (so every
    replica proposes the same bootstrap command). Derived from the hash, so it reveals
    nothing the hash does not."""
    digest = hashlib.sha256(b"hacontrol-accessor:" + secret_hash.encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def same_hash(a: str, b: str) -> bool:
    """Constant-time comparison of two hex digests."""
    return hmac.compare_digest(a.encode(), b.encode())


def controller_credential(cluster_secret: str) -> str:
    """The credential every controller presents to agents: derived from the cluster secret
    (which agents never see), so every replica holds the same one without storing it and no
    user token is ever sent to an agent."""
    return hmac.new(cluster_secret.encode(), b"hacontrol controller credential",
                    hashlib.sha256).hexdigest()
