"""``hacontrol job plan``: what `job run` would change, without changing anything (as
`nomad job plan`), and the job file loading it shares with `job run`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from hacontrol.cli import colour, output
from hacontrol.cli.client import Client, ClientError
from hacontrol.cli.commands.base import (
    EXIT_OK,
    SubParsers,
    UsageError,
    client_command,
    job_path,
)

# The exit codes of `nomad job plan`: scripts tell "nothing to do" from "changes".
EXIT_NO_CHANGES = 0
EXIT_CHANGES = 1
EXIT_PLAN_ERROR = 255

_MARK = {"added": "+", "deleted": "-", "edited": "~"}


def register_plan(job: SubParsers) -> None:
    p = client_command(job, "plan", "show what running a job file would change: a dry run "
                       "of the scheduler that changes nothing", cmd_job_plan)
    p.add_argument("file", type=Path)
    p.add_argument("--namespace", "-n")
    p.add_argument("--name")


def load_job(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(namespace, name, body) of the job file named on the command line."""
    from hacontrol.cli.jobfile import JobFileError, load_job_file

    try:
        spec = load_job_file(args.file)
    except JobFileError as exc:
        raise ClientError(0, "invalid_job_file", str(exc)) from None
    name = args.name or spec.get("name")
    ns = args.namespace or spec.get("namespace") or "default"
    if not name:
        raise UsageError(f"{args.file}: the job has no name; add a 'name' field or pass --name")
    if not isinstance(name, str) or not isinstance(ns, str):
        raise UsageError(f"{args.file}: 'name' and 'namespace' must be strings")
    # The URL is authoritative; keep the body consistent with it so the server
    # never sees two different answers to "which job is this".
    body = dict(spec)
    if "name" in body or args.name:
        body["name"] = name
    if "namespace" in body or args.namespace:
        body["namespace"] = ns
    return ns, name, body


def cmd_job_plan(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    try:
        ns, name, body = load_job(args)
        result = client.post(job_path(ns, name) + "/plan", body)
    except ClientError as exc:
        # 1 means "changes" here, so an error needs its own code (255, as Nomad's).
        sys.stderr.write(f"error: {output.terminal_safe(str(exc))}\n")
        return EXIT_PLAN_ERROR
    if args.json:
        output.print_json(result, out)
    else:
        text = output.terminal_safe(render_plan(ns, name, result, str(args.file)))
        out.write((colour.plan(text) if colour.enabled(out) else text) + "\n")
    changes = result.get("changes") or {}
    changed = bool(result.get("diff")) or any(
        changes.get(k) for k in ("create", "replace", "stop", "pending"))
    return EXIT_CHANGES if changed else EXIT_NO_CHANGES


def _value(v: Any) -> str:
    return json.dumps(v, sort_keys=True) if not isinstance(v, str) else json.dumps(v)


def render_plan(ns: str, name: str, plan: Mapping[str, Any], file: str) -> str:
    """The plan as `nomad job plan` shows it: the diff with +/-/~, then the scheduler's
    dry run, the quota verdict and the index to submit with."""
    diff = plan.get("diff") or []
    index = plan.get("job_modify_index")
    head = "+" if index == 0 else "~" if diff else " "
    lines = [f'{head} Job: "{ns}/{name}"']
    for d in diff:
        mark = _MARK.get(str(d.get("type")), "~")
        field = d.get("field")
        if mark == "+":
            lines.append(f"  + {field}: {_value(d.get('new'))}")
        elif mark == "-":
            lines.append(f"  - {field}: {_value(d.get('old'))}")
        else:
            lines.append(f"  ~ {field}: {_value(d.get('old'))} => {_value(d.get('new'))}")
    changes = plan.get("changes") or {}
    summary = ", ".join(f"{changes.get(k, 0)} {k}" for k in
                        ("create", "replace", "stop", "ignore", "pending"))
    lines += ["", f"Scheduler dry run: {summary}"]
    for p in plan.get("placements") or ():
        if p.get("action") == "ignore":
            continue
        where = f" on {p['node']}" if p.get("node") else ""
        what = f" {p['allocation']}" if p.get("allocation") else ""
        lines.append(f"  {p.get('action')}{what}{where}: {p.get('reason')}")
    quota = plan.get("quota") or {}
    lines.append("Quota: ok" if quota.get("ok") else f"Quota: exceeded: {quota.get('reason')}")
    if changes.get("pending"):
        lines.append("WARNING: some allocations cannot be placed now (see above)")
    lines += ["", f"Job Modify Index: {index}",
              "To submit the job only if it has not changed since this plan, run",
              f"  hacontrol job run --check-index {index} {file}"]
    return "\n".join(lines)


__all__ = ["EXIT_OK", "load_job", "register_plan", "render_plan"]
