"""``hacontrol job``: submit, inspect, scale, stop and revert jobs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError
from hacontrol.cli.commands.base import (
    EXIT_OK,
    SubParsers,
    UsageError,
    client_command,
    command_group,
    index_suffix,
    job_path,
    namespace_of,
    show,
    unwrap,
)
from hacontrol.cli.commands.flags import non_negative_int, positive_int


def register(sub: SubParsers) -> None:
    job = command_group(sub, "job", "manage jobs")
    p = client_command(job, "run", "submit or update a job from a spec file", cmd_job_run)
    p.add_argument("file", type=Path)
    p.add_argument("--namespace", "-n")
    p.add_argument("--name")
    p = client_command(job, "status", "list jobs, or show one job", cmd_job_status)
    p.add_argument("name", nargs="?")
    p.add_argument("--namespace", "-n")
    p = client_command(job, "scale", "change a job's count", cmd_job_scale)
    p.add_argument("name")
    p.add_argument("count", type=non_negative_int)
    p.add_argument("--namespace", "-n")
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
    result = client.put(job_path(ns, name), body)
    if args.json:
        output.print_json(result, out)
        return EXIT_OK
    job = result.get("job") or {}
    out.write(output.terminal_safe(
        f"Job {ns}/{job.get('name', name)} registered: version "
        f"{output.cell_text(job.get('version'))}, index {output.cell_text(result.get('index'))}\n"
    ))
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
        out.write(output.terminal_safe(output.render_job(job, allocations)) + "\n")
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
