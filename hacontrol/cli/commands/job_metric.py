"""``hacontrol job metric``: push the value of a job's external scaling metric, or show
what the leader knows of its metric (`PUT|GET /v1/jobs/{ns}/{name}/metrics...`; the
client follows the 307 a replica that does not lead answers with)."""

from __future__ import annotations

import argparse
import math
from typing import IO, Any
from urllib.parse import quote

from hacontrol.cli import output
from hacontrol.cli.client import Client
from hacontrol.cli.commands.base import (
    SubParsers,
    UsageError,
    client_command,
    job_path,
    namespace_of,
    show,
)


def register_metric(job: SubParsers) -> None:
    p = client_command(job, "metric", "push the current value of a job's external scaling "
                       "metric (METRIC VALUE), or show what the leader knows of its metric",
                       cmd_job_metric)
    p.add_argument("name")
    p.add_argument("metric", nargs="?")
    p.add_argument("value", nargs="?")
    p.add_argument("--namespace", "-n")


def _value(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"value must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise UsageError("value must be a finite number")
    return value


def cmd_job_metric(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = namespace_of(args)
    base = job_path(ns, args.name) + "/metrics"
    if args.metric is None:
        status = client.get(base)
        return show(args, out, status, lambda: render_status(status))
    if args.value is None:
        raise UsageError("give the metric's VALUE to push it (or no METRIC to show the "
                         "job's metric)")
    value = _value(args.value)
    result = client.put(f"{base}/{quote(args.metric)}", {"value": value})
    return show(args, out, result, lambda: (
        f"{args.metric} of {ns}/{args.name} = {output.cell_text(result.get('value'))}, "
        f"counted for {output.cell_text(result.get('stale_after_s'))}s"))


def render_status(status: dict[str, Any]) -> str:
    metric = status.get("metric") or {}
    if not metric:
        return f"Job {status.get('namespace')}/{status.get('job')} scales on no metric"
    lines = [f"Metric   {metric.get('name')} ({metric.get('source')})",
             f"Count    {output.cell_text(status.get('count'))}",
             f"Total    {output.cell_text(status.get('total'))}"
             + ("" if status.get("complete") in (None, True)
                else " (not every allocation reported)"),
             f"Decision {output.cell_text(status.get('decision'))}"]
    if status.get("age_s") is not None:
        lines.insert(3, f"Age      {output.cell_text(status.get('age_s'))}s")
    return "\n".join(lines)
