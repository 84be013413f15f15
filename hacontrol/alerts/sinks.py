"""Delivering one notification to one sink: the only I/O of alerting besides the log.

A webhook gets the body as JSON by POST, signed with its secret:
`X-Hacontrol-Signature: sha256=<hex HMAC-SHA256 of the body>`; any 2xx is delivered. An exec
sink's command runs on the leader's host, without a shell, in a worker thread (never on
the event loop), with the body on stdin and a timeout; exit 0 is delivered. Each answers
None when delivered, else why not.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
from typing import Any

import aiohttp

from hacontrol.model.alerts import Sink, SinkType

SIGNATURE_HEADER = "X-Hacontrol-Signature"
ID_HEADER = "X-Hacontrol-Notification"
ERROR_TAIL = 200
# What an exec sink's command inherits of the server's environment: enough to find programs
# and speak a locale, never the server's own settings (a token in HACONTROL_TOKEN, say).
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "TZ")


def encode_body(body: dict[str, Any]) -> bytes:
    """The bytes every sink receives (and the signature covers): canonical JSON, so a
    retry, from this leader or the next, sends the very same bytes."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post_webhook(session: aiohttp.ClientSession, sink: Sink, body: bytes,
                       notification: str) -> str | None:
    headers = {"Content-Type": "application/json", ID_HEADER: notification}
    if sink.secret is not None:
        headers[SIGNATURE_HEADER] = sign(sink.secret, body)
    try:
        # No redirects: the rule names where the body goes, and only there.
        async with session.post(str(sink.url), data=body, headers=headers,
                                allow_redirects=False,
                                timeout=aiohttp.ClientTimeout(total=sink.timeout_s)) as resp:
            await resp.content.read(64 * 1024)
            if 200 <= resp.status < 300:
                return None
            return f"HTTP {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:ERROR_TAIL]


def run_command(command: tuple[str, ...], body: bytes, timeout_s: float,
                env: dict[str, str]) -> str | None:
    """Run `command` with `body` on stdin (blocking: call it in a worker thread)."""
    try:
        proc = subprocess.run(list(command), input=body, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=timeout_s, check=False,
                              env=env, start_new_session=True)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout_s:g}s"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"[:ERROR_TAIL]
    if proc.returncode != 0:
        tail = proc.stderr[-ERROR_TAIL:].decode(errors="replace").strip()
        return f"exit status {proc.returncode}" + (f": {tail}" if tail else "")
    return None


async def run_exec(sink: Sink, body: bytes, notification: dict[str, Any]) -> str | None:
    env = {k: os.environ[k] for k in KEPT_ENV if k in os.environ}
    env.update({"HACONTROL_ALERT": str(notification.get("alert", "")),
                "HACONTROL_ALERT_STATUS": str(notification.get("status", "")),
                "HACONTROL_NOTIFICATION_ID": str(notification.get("id", ""))})
    return await asyncio.to_thread(run_command, sink.command, body, sink.timeout_s, env)


async def deliver(session: aiohttp.ClientSession, sink: Sink, body: dict[str, Any]
                  ) -> str | None:
    """Deliver `body` to `sink`: None when delivered, else the reason it was not."""
    raw = encode_body(body)
    if sink.type == SinkType.WEBHOOK:
        return await post_webhook(session, sink, raw, str(body.get("id", "")))
    return await run_exec(sink, raw, body)
