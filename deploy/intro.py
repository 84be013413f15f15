#!/opt/hacontrol/bin/python
"""hacontrol-intro: the compose cluster's one-shot introduction step.

With the management token (which only this step and the controllers hold), wait until a
controller answers, then put COUNT introduction tokens into DIR/pool, one 0400 file each,
written under another name and renamed into place (an agent never reads half a token).
Each agent claims one file by renaming it (deploy/entrypoint.sh, claim_intro) and exchanges
it for its own node credential, so no agent ever holds the management token. Tokens left in
the pool from an earlier run are removed first; unclaimed ones expire after TTL seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

WAIT_S = 180.0


def create(controllers: list[str], token: str, ttl: float,
           context: ssl.SSLContext | None) -> str:
    """One introduction token, from whichever controller answers first; retried until
    WAIT_S (the controllers may still be electing a leader)."""
    deadline = time.monotonic() + WAIT_S
    last = "no controller answered"
    while time.monotonic() < deadline:
        for url in controllers:
            req = urllib.request.Request(f"{url.rstrip('/')}/v1/nodes/intro",
                                         data=json.dumps({"ttl_s": ttl}).encode(),
                                         method="POST")
            req.add_header("Authorization", f"Bearer {token}")
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=5, context=context) as resp:
                    return str(json.loads(resp.read())["token"]["secret_id"])
            except urllib.error.HTTPError as err:
                last = f"{url}: HTTP {err.code}"
                if err.code in (401, 403, 422):
                    sys.exit(f"hacontrol-intro: refused: {last} {err.read()[:300]!r}")
            except (OSError, ValueError, KeyError) as exc:
                last = f"{url}: {exc}"
        time.sleep(0.5)
    sys.exit(f"hacontrol-intro: no introduction token after {WAIT_S:.0f} s: {last}")


def main() -> None:
    p = argparse.ArgumentParser(prog="hacontrol-intro")
    p.add_argument("--controllers", required=True, help="API URLs, comma separated")
    p.add_argument("--token-file", required=True, type=Path)
    p.add_argument("--ca", default="", help="the CA the controllers' certificates chain to")
    p.add_argument("--count", type=int, default=2)
    p.add_argument("--ttl", type=float, default=600.0)
    p.add_argument("--dir", required=True, type=Path)
    args = p.parse_args()
    token = args.token_file.read_text().strip()
    context = ssl.create_default_context(cafile=args.ca) if args.ca else None
    pool = args.dir / "pool"
    os.umask(0o077)
    pool.mkdir(parents=True, exist_ok=True)
    for old in pool.iterdir():
        old.unlink()
    controllers = [u for u in args.controllers.split(",") if u]
    for i in range(args.count):
        secret = create(controllers, token, args.ttl, context)
        tmp = args.dir / f".intro-{i}.tmp"
        tmp.write_text(secret)
        tmp.chmod(0o400)
        tmp.rename(pool / f"intro-{i}")
    print(f"hacontrol-intro: {args.count} introduction tokens in {pool} "
          f"(valid {args.ttl:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
