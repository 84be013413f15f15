"""``hacontrol alert``: alert rules, their status and their notifications' deliveries."""

from __future__ import annotations

import argparse
import sys
import time
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
)
from hacontrol.cli.jobfile import JobFileError, load_job_file, parse_job_text


def register(sub: SubParsers) -> None:
    alert = command_group(sub, "alert", "alert rules: when to alert and where to send it")
    p = client_command(alert, "apply", "create or replace an alert rule from a file",
                       cmd_alert_apply)
    p.add_argument("file", help="JSON, YAML or TOML: {\"name\": ..., \"when\": ..., "
                                "\"sinks\": [...]}, or what `alert show --json` prints; "
                                "'-' reads standard input")
    p.add_argument("--name", default=None, help="the rule's name (default: the file's)")
    client_command(alert, "list", "list alert rules with their status", cmd_alert_list)
    p = client_command(alert, "show", "show a rule, its status and its notifications",
                       cmd_alert_show)
    p.add_argument("name")
    p = client_command(alert, "delete", "delete an alert rule", cmd_alert_delete)
    p.add_argument("name")


def _read_rule(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            return parse_job_text(sys.stdin.read(), "<stdin>")
        return load_job_file(path)
    except JobFileError as exc:
        raise UsageError(str(exc)) from None


def as_rule(doc: dict[str, Any]) -> dict[str, Any]:
    """The rule in `doc`: a rule itself, or what `alert show --json` prints (`name`, `rule`,
    `state`), whose webhook sinks say `secret_set` and so keep their secrets."""
    inner = doc.get("rule")
    if isinstance(inner, dict) and "when" not in doc:
        return {**inner, "name": doc.get("name", inner.get("name"))}
    return doc


def cmd_alert_apply(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    body = as_rule(_read_rule(args.file))
    name = args.name or body.get("name")
    if not isinstance(name, str) or not name:
        raise UsageError("the rule needs a name: give --name or a \"name\" in the file")
    body["name"] = name
    result = client.put(f"/v1/alerts/{quote(name)}", body)
    return show(args, out, result, lambda: f"Alert {name!r} applied{index_suffix(result)}")


def render_alert_list(alerts: list[dict[str, Any]], now: float | None = None) -> str:
    if not alerts:
        return "No alert rules."
    return output.format_table(
        ["NAME", "WHEN", "SEVERITY", "STATUS", "SINCE", "SINKS", "PENDING"],
        [[a.get("name"), a.get("when"), a.get("severity"), a.get("status"),
          output.format_age(a.get("since"), now) if a.get("since") else "-", a.get("sinks"),
          a.get("pending")] for a in alerts])


def _sink_text(sink: dict[str, Any]) -> str:
    if sink.get("type") == "webhook":
        signed = "signed" if sink.get("secret_set") else "unsigned"
        return f"webhook {sink.get('url')} ({signed})"
    return "exec " + " ".join(str(a) for a in sink.get("command") or [])


def render_alert(view: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    rule = view.get("rule") or {}
    state = view.get("state") or {}
    scope = "/".join(str(x) for x in (rule.get("namespace"), rule.get("job")) if x) or "-"
    head = output.format_kv([
        ("Name", view.get("name")), ("When", rule.get("when")),
        ("Severity", rule.get("severity")), ("Scope", scope),
        ("Threshold", rule.get("threshold")), ("Window", f"{rule.get('window_s')}s"),
        ("Status", state.get("status", "ok")),
        ("Since", output.format_age(state.get("since"), now) if state.get("since") else "-"),
        ("Details", output.to_json(state.get("details") or {})),
    ])
    sinks = "\n".join(f"  [{i}] {_sink_text(s)}" for i, s in enumerate(rule.get("sinks") or []))
    rows = []
    for n in reversed(state.get("notifications") or []):
        for d in n.get("deliveries") or []:
            rows.append([n.get("id"), n.get("status"), d.get("sink"), d.get("status"),
                         d.get("attempts"), d.get("last_error") or ""])
    table = output.format_table(["NOTIFICATION", "STATUS", "SINK", "DELIVERY", "ATTEMPTS",
                                 "LAST ERROR"], rows) if rows else "No notifications."
    return f"{head}\n\nSinks:\n{sinks or '  none'}\n\n{table}"


def cmd_alert_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/alerts")
    return show(args, out, result, lambda: render_alert_list(result.get("alerts") or []))


def cmd_alert_show(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result: Json = client.get(f"/v1/alerts/{quote(args.name)}")
    return show(args, out, result, lambda: render_alert(result))


def cmd_alert_delete(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.delete(f"/v1/alerts/{quote(args.name)}")
    return show(args, out, result,
                lambda: f"Alert {args.name!r} deleted{index_suffix(result)}")
