"""``hacontrol acl``: bootstrap, policies and tokens; ``hacontrol node intro create``.

A secret is shown once, when it is made (bootstrap, token create, intro create); the
cluster keeps only its hash.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import IO, Any

from hacontrol.cli import output
from hacontrol.cli.client import Client, Json, quote
from hacontrol.cli.commands.base import (
    SubParsers,
    UsageError,
    client_command,
    command_group,
    index_suffix,
    show,
    unwrap,
)

DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)?\Z")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> float:
    """Seconds from `90`, `90s`, `10m`, `2h` or `7d`."""
    m = DURATION_RE.match(value.strip())
    if m is None or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} is not a duration such as 90s, 10m, 2h")
    return float(m.group(1)) * UNIT_S[m.group(2) or "s"]


def register(sub: SubParsers) -> None:
    acl = command_group(sub, "acl", "access control: bootstrap, policies, tokens")
    client_command(acl, "bootstrap", "make the cluster's first management token (once)",
                   cmd_bootstrap)
    policy = command_group(acl, "policy", "manage ACL policies")
    p = client_command(policy, "apply", "create or replace a policy from a JSON file",
                       cmd_policy_apply)
    p.add_argument("name")
    p.add_argument("file", help='JSON: {"description": ..., "rules": {...}}, or the rules '
                                "alone; '-' reads standard input")
    p.add_argument("--description", default=None)
    client_command(policy, "list", "list policies", cmd_policy_list)
    p = client_command(policy, "delete", "delete a policy", cmd_policy_delete)
    p.add_argument("name")
    token = command_group(acl, "token", "manage ACL tokens")
    p = client_command(token, "create", "create a token (its secret is shown once)",
                       cmd_token_create)
    p.add_argument("--name", default="")
    p.add_argument("--type", choices=("client", "management"), default="client")
    p.add_argument("--policy", action="append", default=[], metavar="NAME",
                   help="a policy the token carries (repeat for each)")
    p.add_argument("--ttl", type=duration, default=None, help="expiry, e.g. 90s, 10m, 2h, 7d")
    client_command(token, "list", "list tokens (never their secrets)", cmd_token_list)
    client_command(token, "self", "show the token in use", cmd_token_self)
    p = client_command(token, "revoke", "revoke a token by its accessor id", cmd_token_revoke)
    p.add_argument("accessor_id")


def register_intro(node: SubParsers) -> None:
    """``hacontrol node intro create``: an agent's short-lived introduction token."""
    intro = command_group(node, "intro", "introduction tokens for joining agents")
    p = client_command(intro, "create", "make a short-lived token an agent exchanges, once, "
                       "for its own node credential (needs node: write)", cmd_intro_create)
    p.add_argument("--name", default=None, help="the only node name it may claim")
    p.add_argument("--ttl", type=duration, default=600.0, help="expiry (default 10m)")


# ------------------------------------------------------------------ rendering

def render_token(token: dict[str, Any], secret: str | None = None) -> str:
    pairs: list[tuple[str, Any]] = [("Accessor ID", token.get("accessor_id")),
                                    ("Name", token.get("name") or "-"),
                                    ("Type", token.get("type")),
                                    ("Policies", ", ".join(token.get("policies") or []) or "-"),
                                    ("Expires", "never" if token.get("expires_ts") is None
                                     else f"at {token['expires_ts']:.0f}")]
    if token.get("node"):
        pairs.append(("Node", token["node"]))
    if secret is not None:
        pairs.append(("Secret ID", secret))
    text = output.format_kv(pairs)
    if secret is not None:
        text += "\n\nThe secret is shown only now; the cluster keeps only its hash."
    return text


def render_token_list(tokens: list[dict[str, Any]]) -> str:
    if not tokens:
        return "No tokens"
    return output.format_table(
        ["ACCESSOR ID", "NAME", "TYPE", "POLICIES", "EXPIRES"],
        [[t.get("accessor_id"), t.get("name") or "-", t.get("type"),
          ",".join(t.get("policies") or []) or "-",
          "never" if t.get("expires_ts") is None else f"at {t['expires_ts']:.0f}"]
         for t in tokens])


def render_policy_list(policies: list[dict[str, Any]]) -> str:
    if not policies:
        return "No policies"
    return output.format_table(
        ["NAME", "DESCRIPTION", "RULES"],
        [[p.get("name"), p.get("description") or "-",
          json.dumps(p.get("rules") or {}, sort_keys=True, separators=(",", ":"))]
         for p in policies])


def _created(args: argparse.Namespace, out: IO[str], result: Json) -> int:
    token = unwrap(result, "token")
    return show(args, out, result, lambda: render_token(token, token.get("secret_id")))


# ------------------------------------------------------------------ commands

def cmd_bootstrap(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    return _created(args, out, client.post("/v1/acl/bootstrap", {}))


def _read_policy(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise UsageError(f"{path} must hold a JSON object")
    return body if "rules" in body else {"rules": body}


def cmd_policy_apply(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    body = _read_policy(args.file)
    if args.description is not None:
        body["description"] = args.description
    result = client.put(f"/v1/acl/policies/{quote(args.name)}", body)
    return show(args, out, result,
                lambda: f"Policy {args.name!r} applied{index_suffix(result)}")


def cmd_policy_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/acl/policies")
    return show(args, out, result, lambda: render_policy_list(result.get("policies") or []))


def cmd_policy_delete(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.delete(f"/v1/acl/policies/{quote(args.name)}")
    return show(args, out, result,
                lambda: f"Policy {args.name!r} deleted{index_suffix(result)}")


def cmd_token_create(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    if args.type == "client" and not args.policy:
        raise UsageError("a client token needs at least one --policy")
    body: dict[str, Any] = {"name": args.name, "type": args.type, "policies": args.policy}
    if args.ttl is not None:
        body["ttl_s"] = args.ttl
    return _created(args, out, client.post("/v1/acl/tokens", body))


def cmd_token_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/acl/tokens")
    return show(args, out, result, lambda: render_token_list(result.get("tokens") or []))


def cmd_token_self(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/acl/tokens/self")
    return show(args, out, result, lambda: render_token(unwrap(result, "token")))


def cmd_token_revoke(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.delete(f"/v1/acl/tokens/{quote(args.accessor_id)}")
    return show(args, out, result,
                lambda: f"Token {args.accessor_id} revoked{index_suffix(result)}")


def cmd_intro_create(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    body: dict[str, Any] = {"ttl_s": args.ttl}
    if args.name is not None:
        body["name"] = args.name
    return _created(args, out, client.post("/v1/nodes/intro", body))
