"""``hacontrol job``: submit, inspect, scale, stop and revert jobs."""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import IO

from hacontrol.cli import output
from hacontrol.cli.client import Client
from hacontrol.cli.commands.base import (
    EXIT_OK,
    SubParsers,
    client_command,
    command_group,
    index_suffix,
    job_path,
    namespace_of,
    show,
    unwrap,
)
from hacontrol.cli.commands.flags import non_negative_float, non_negative_int, positive_int
from hacontrol.cli.commands.job_metric import register_metric
from hacontrol.cli.commands.job_plan import load_job, register_plan
from hacontrol.cli.watch import watch


def register(sub: SubParsers) -> None:
    job = command_group(sub, "job", "manage jobs")
    p = client_command(job, "run", "submit or update a job from a spec file, then follow "
                       "its deployment until it succeeds or fails", cmd_job_run)
    p.add_argument("file", type=Path)
    p.add_argument("--namespace", "-n")
    p.add_argument("--name")
    p.add_argument("--detach", "-d", action="store_true",
                   help="return once the job is registered, without following it")
    p.add_argument("--check-index", type=non_negative_int, default=None, metavar="N",
                   help="refuse unless the job's modify index is still N (from job plan; "
                        "0: the job must not exist yet)")
    p.add_argument("--timeout", type=non_negative_float, default=None, metavar="SECONDS",
                   help="stop waiting after this long (default: the job's update.deadline_s, "
                        "else 300)")
    register_plan(job)
    p = client_command(job, "status", "list jobs, or show one job", cmd_job_status)
    p.add_argument("name", nargs="?")
    p.add_argument("--namespace", "-n")
    p = client_command(job, "scale", "change a job's count", cmd_job_scale)
    p.add_argument("name")
    p.add_argument("count", type=non_negative_int)
    p.add_argument("--namespace", "-n")
    register_metric(job)
    p = client_command(job, "stop", "stop and remove a job", cmd_job_stop)
    p.add_argument("name")
    p.add_argument("--namespace", "-n")
    p = client_command(job, "versions", "list a job's versions, newest first", cmd_job_versions)
    p.add_argument("name")
    p.add_argument("--namespace", "-n")
    p = client_command(job, "revert", "submit an earlier version of a job again",
                       cmd_job_revert)
    p.add_argument("name")
    p.add_argument("version", type=positive_int)
    p.add_argument("--namespace", "-n")


def cmd_job_run(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns, name, body = load_job(args)
    path = job_path(ns, name)
    query = "" if args.check_index is None else f"?check_index={args.check_index}"
    result = client.put(path + query, body)
    job = result.get("job") or {}
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.terminal_safe(
            f"Job {ns}/{job.get('name', name)} registered: version "
            f"{output.cell_text(job.get('version'))}, index "
            f"{output.cell_text(result.get('index'))}\n"))
    version = job.get("version")
    if args.detach or not isinstance(version, int):
        return EXIT_OK
    try:
        # With --json the answer above is the output: progress would only garble it.
        return watch(client, path, version, io.StringIO() if args.json else out, sys.stderr,
                     tty=not args.json and out.isatty(), timeout_s=args.timeout)
    except KeyboardInterrupt:
        sys.stderr.write(f"\nStopped watching; the deployment goes on "
                         f"(hacontrol job status {name} -n {ns}).\n")
        return EXIT_OK


def cmd_job_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    if not args.name:
        result = client.get("/v1/jobs", {"namespace": args.namespace})
        return show(args, out, result,
                    lambda: output.render_job_list(result.get("jobs") or []))
    ns = namespace_of(args)
    job_result = client.get(job_path(ns, args.name))
    allocs_result = client.get("/v1/allocations", {"namespace": ns, "job": args.name})
    job = dict(job_result.get("job") or {})
    allocations = allocs_result.get("allocations") or []
    if args.json:
        output.print_json({"job": job, "allocations": allocations}, out)
    else:
        job.setdefault("name", args.name)
        job.setdefault("namespace", ns)
        out.write(output.human(output.render_job(job, allocations), out) + "\n")
    return EXIT_OK


def cmd_job_scale(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = namespace_of(args)
    result = client.post(job_path(ns, args.name) + "/scale", {"count": args.count})
    return show(args, out, result,
                lambda: f"Job {ns}/{args.name} scaled to {args.count}{index_suffix(result)}")


def cmd_job_stop(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = namespace_of(args)
    result = client.delete(job_path(ns, args.name))
    return show(args, out, result,
                lambda: f"Job {ns}/{args.name} stopped{index_suffix(result)}")


def cmd_job_versions(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = namespace_of(args)
    result = client.get(job_path(ns, args.name) + "/versions")
    return show(args, out, result,
                lambda: output.render_versions(result.get("versions") or []))


def cmd_job_revert(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = namespace_of(args)
    result = client.post(job_path(ns, args.name) + "/revert", {"version": args.version})

    def render() -> str:
        job = unwrap(result, "job")
        return (f"Job {ns}/{args.name} reverted to version {args.version}: now version "
                f"{output.cell_text(job.get('version'))}{index_suffix(result)}")

    return show(args, out, result, render)
