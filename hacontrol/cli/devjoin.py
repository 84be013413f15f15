"""The credentials of a `hacontrol dev` cluster: its management token and cluster secret,
kept in the data directory across runs, and one introduction token per agent, so that no
agent ever holds the management token, as in production (docs/security.md)."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable
from pathlib import Path

from hacontrol.agent.credentials import NODE_CREDENTIAL_FILE
from hacontrol.raft.keys import SecretError, generate_secret, parse_secret
from hacontrol.tls.files import private_dir, write_private

from .devprocess import ensure_secret_file
from .transport import HttpTransport, Request, TransportError

INTRO_TTL_S = 600.0


class IntroError(Exception):
    """The cluster would not make an introduction token (the message says why)."""


def ensure_dev_secrets(d: Path, say: Callable[[str], None]) -> str:
    """The management token in `d/token` and the cluster secret in `d/secret`, made on the
    first run and reused after (replicas restarted on the same data come back with the
    same cluster). Returns the token."""
    token, new_token = ensure_secret_file(d / "token", lambda: secrets.token_urlsafe(32))
    secret, new_secret = ensure_secret_file(d / "secret", generate_secret)
    try:
        parse_secret(secret)
    except SecretError:
        # Written by an earlier version (a bare password); the Raft port now wants
        # random keys with their own salt. Every dev replica reads this one file.
        (d / "secret").unlink()
        _, new_secret = ensure_secret_file(d / "secret", generate_secret)
        say(f"hacontrol dev: replaced the old-format cluster secret in {d}")
    if not (new_token and new_secret):
        say(f"hacontrol dev: reusing the token and cluster secret in {d}")
    return token


def intro_path(data_dir: Path, agent: str) -> Path:
    """Where dev keeps `agent`'s introduction token (used up once the agent has joined)."""
    return data_dir / "intro" / agent


def write_intro_tokens(transport: HttpTransport, api_url: str, token: str, data_dir: Path,
                       agents: list[str]) -> list[str]:
    """Make one introduction token, bound to its name, for every agent that has not joined
    yet (no node credential in its data directory), and write it to `intro_path` (0600).
    Returns the names it made tokens for."""
    private_dir(data_dir / "intro")
    made = []
    for name in agents:
        if (data_dir / name / NODE_CREDENTIAL_FILE).exists():
            continue  # joined on an earlier run: the agent reads its credential, not this
        body = json.dumps({"name": name, "ttl_s": INTRO_TTL_S}).encode()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                   "Idempotency-Key": uuid.uuid4().hex}
        try:
            resp = transport.handle_request(
                Request("POST", f"{api_url}/v1/nodes/intro", headers, body, timeout_s=10))
            answer = json.loads(resp.body)
        except (TransportError, ValueError) as exc:
            raise IntroError(f"no introduction token for {name}: {exc}") from None
        secret = answer.get("token", {}).get("secret_id") if isinstance(answer, dict) else None
        if resp.status != 200 or not isinstance(secret, str):
            raise IntroError(f"no introduction token for {name}: HTTP {resp.status}")
        path = intro_path(data_dir, name)
        path.unlink(missing_ok=True)
        write_private(path, secret.encode())
        made.append(name)
    return made
