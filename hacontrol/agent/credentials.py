"""The agent's credentials: its own node credential, and the controllers' it accepts.

An agent joins with a short-lived introduction token (or, as before node credentials, with
a token that may write nodes: it then introduces itself) and exchanges it, once, for a
node credential kept in `<data dir>/node-credential` (mode 0600) and used from then on. The
exchange's answer also names the hash of the controllers' credential; the agent pins it
(`controller-credential.sha256`) and accepts calls to its own API only with that
credential, never with a user's token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .digests import compare, sha256_hex
from .httpclient import Client, HTTPError

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

NODE_CREDENTIAL_FILE = "node-credential"
CONTROLLER_KEY_FILE = "controller-credential.sha256"
INTRO_TTL_S = 120
JOIN_DEADLINE_S = 60.0
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class JoinRefused(Exception):
    """The controllers refused this agent's credential request (the message says why)."""


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, whatever the umask (replaced atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class ControllerKey:
    """The hash of the credential the controllers present; pinned once, then fixed."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / CONTROLLER_KEY_FILE
        self.sha256: str | None = None
        if self.path.exists():
            value = self.path.read_text().strip()
            self.sha256 = value if HEX64.match(value) else None

    def pin(self, value: Any) -> None:
        """Remember the controllers' credential hash, unless one is pinned already."""
        if self.sha256 is not None or not isinstance(value, str) or not HEX64.match(value):
            return
        write_private(self.path, value)
        self.sha256 = value

    def accepts(self, bearer: str) -> bool:
        if self.sha256 is None or not bearer:
            return False
        return compare(sha256_hex(bearer.encode()), self.sha256)


async def _post(controllers: list[str], path: str, body: dict[str, Any], token: str,
                deadline_s: float = JOIN_DEADLINE_S, tls: ssl.SSLContext | None = None
                ) -> dict[str, Any]:
    """POST to the first controller that answers 200, retrying while the cluster comes up
    (connection errors, 5xx, and 401/403 while ACLs are not bootstrapped yet)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    last = "no controller answered"
    # With no TLS context an https:// address is checked against the system's CAs.
    async with Client({"Authorization": f"Bearer {token}"}, tls) as s:
        while True:
            for url in controllers:
                try:
                    resp = await s.request("POST", f"{url.rstrip('/')}{path}",
                                           json_body=body, timeout_s=10)
                    data = resp.json()
                except (HTTPError, ValueError) as exc:
                    last = f"{url}: {exc}"
                    continue
                if resp.status == 200 and isinstance(data, dict):
                    return data
                err = data.get("error", {}) if isinstance(data, dict) else {}
                last = f"{url}: HTTP {resp.status} {err.get('message', '')}"
                if resp.status in (409, 422):
                    raise JoinRefused(last)
            if loop.time() >= deadline:
                raise JoinRefused(last)
            await asyncio.sleep(0.5)


async def node_credential(controllers: list[str], name: str, data_dir: Path, key: ControllerKey,
                          intro: str | None, token: str | None,
                          deadline_s: float = JOIN_DEADLINE_S,
                          tls: ssl.SSLContext | None = None) -> str:
    """This node's credential: kept from an earlier exchange, or obtained now with `intro`
    (or by introducing itself with `token`). Falls back to `token` itself when the cluster
    will not issue a credential for it (a name already bound, a token without node: write),
    as agents did before node credentials."""
    path = data_dir / NODE_CREDENTIAL_FILE
    if path.exists():
        kept = path.read_text().strip()
        if kept:
            return kept
    try:
        if intro is None:
            if not token:
                raise JoinRefused("neither a node credential, an introduction token nor a "
                                  "token was given")
            made = await _post(controllers, "/v1/nodes/intro",
                               {"name": name, "ttl_s": INTRO_TTL_S}, token, deadline_s, tls)
            intro = str(made["token"]["secret_id"])
        answer = await _post(controllers, "/v1/agent/credential", {"node": name}, intro,
                             deadline_s, tls)
    except (JoinRefused, KeyError, TypeError) as exc:
        if token:
            log.warning("no node credential (%s); using the configured token", exc)
            return token
        raise
    secret = str(answer["token"]["secret_id"])
    write_private(path, secret)
    key.pin(answer.get("controller_credential_sha256"))
    log.info("node %s: credential %s issued", name, answer["token"].get("accessor_id"))
    return secret
