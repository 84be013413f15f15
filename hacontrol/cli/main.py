"""The ``hacontrol`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hacontrol import __version__
from hacontrol.cli import output
from hacontrol.cli.client import (
    DEFAULT_ADDR,
    Client,
    ClientError,
    Stream,
    StreamBroken,
    quote,
    split_addrs,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, Client, IO[str]], int]


class UsageError(Exception):
    """Bad arguments that argparse itself cannot detect."""


# --- argument value types ----------------------------------------------------


def host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return value


def peer_spec(value: str) -> str:
    parts = value.split("=", 2)
    if len(parts) != 3 or not parts[0]:
        raise argparse.ArgumentTypeError(
            f"expected ID=RAFTHOST:PORT=http://APIHOST:PORT, got {value!r}"
        )
    host_port(parts[1])
    if not parts[2].startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"peer API address must be a URL, got {parts[2]!r}")
    return value


def url_list(value: str) -> list[str]:
    urls = split_addrs(value)
    if not urls:
        raise argparse.ArgumentTypeError("expected at least one URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise argparse.ArgumentTypeError(f"expected an http:// URL, got {url!r}")
    return urls


def non_negative_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {n}")
    return n


def positive_int(value: str) -> int:
    n = non_negative_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def non_negative_float(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not f >= 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return f


def label_pair(value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    key = key.strip()
    if not sep or not key or any(c.isspace() for c in key):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {value!r}")
    return key, val


def bind_host(value: str) -> str:
    host = value.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    # One colon is HOST:PORT (the port has its own flag); more is an IPv6 address.
    if not host or host.count(":") == 1 or any(c.isspace() or c in "/[]" for c in host):
        raise argparse.ArgumentTypeError(f"expected a host name or IP address, got {value!r}")
    return host


def signal_name(value: str) -> str:
    name = value.strip().upper()
    if name.isdigit():
        return name
    if not name.isalnum():
        raise argparse.ArgumentTypeError(f"expected a signal such as SIGHUP, got {value!r}")
    return name if name.startswith("SIG") else "SIG" + name


LOG_LEVELS = ["debug", "info", "warning", "error"]


# --- parser --------------------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, top_level: bool) -> None:
    # Offered both before and after the subcommand. Below the top level the default
    # is SUPPRESS so a subparser does not overwrite a value given earlier.
    default: Any = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--addr",
        default=default,
        help="API URL(s), comma separated; default $HACONTROL_ADDR or " + DEFAULT_ADDR,
    )
    group.add_argument("--token", default=default, help="management token; default $HACONTROL_TOKEN")
    group.add_argument("--token-file", default=default, type=Path, help="file holding the token")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hacontrol", description="A highly available control plane for processes."
    )
    parser.add_argument("--version", action="version", version=f"hacontrol {__version__}")
    _connection_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def client_cmd(
        parent: Any, name: str, help_text: str, handler: Handler, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        _connection_options(p, top_level=False)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print the raw JSON answer")
        p.set_defaults(handler=handler)
        return p

    # server
    p = sub.add_parser("server", help="run a controller replica")
    p.add_argument("--id", required=True, help="this replica's id")
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--raft", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument("--api", required=True, type=host_port, metavar="HOST:PORT")
    p.add_argument(
        "--peer",
        action="append",
        default=[],
        type=peer_spec,
        metavar="ID=RAFTHOST:PORT=http://APIHOST:PORT",
        help="another replica (repeat for each)",
    )
    p.add_argument("--secret-file", required=True, type=Path)
    p.add_argument("--token-file", required=True, type=Path)
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--compaction-entries", type=non_negative_int, default=None,
                   help="compact the Raft log after this many entries (default 5000)")
    p.add_argument("--plant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--heartbeat-grace", type=float, default=3.0,
                   help="seconds of silence before a node is marked down (default 3)")
    p.set_defaults(run=run_server)

    # agent
    p = sub.add_parser("agent", help="run a node agent")
    p.add_argument("--name", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument(
        "--controllers", required=True, type=url_list, action="extend", metavar="URL[,URL...]"
    )
    p.add_argument("--token-file", required=True, type=Path)
    p.add_argument("--port", type=non_negative_int, default=0)
    p.add_argument("--cpu", type=non_negative_float, default=None, help="CPU capacity to offer")
    p.add_argument("--memory-mb", type=non_negative_int, default=None, help="memory to offer")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument("--label", action="append", default=[], type=label_pair, metavar="KEY=VALUE",
                   help="a node label for placement constraints (repeat for each)")
    p.add_argument("--bind", default="127.0.0.1", type=bind_host, metavar="HOST",
                   help="address the agent's own HTTP port listens on (default 127.0.0.1)")
    p.add_argument("--advertise", default=None, metavar="URL",
                   help="URL the controllers use to reach this agent (default: from --bind)")
    p.set_defaults(run=run_agent)

    # dev
    p = sub.add_parser("dev", help="run a local cluster in the foreground")
    p.add_argument("--replicas", type=non_negative_int, default=3)
    p.add_argument("--agents", type=non_negative_int, default=1)
    p.add_argument("--data-dir", type=Path, default=Path(".hacontrol/dev"))
    p.add_argument("--api-port", type=non_negative_int, default=8100)
    p.add_argument("--raft-port", type=non_negative_int, default=7100)
    p.add_argument("--agent-port", type=non_negative_int, default=8200)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    p.add_argument(
        "--ready-timeout", type=non_negative_float, default=30.0, help=argparse.SUPPRESS
    )
    p.set_defaults(run=run_dev)

    # status
    client_cmd(sub, "status", "show the replica's view of the cluster", cmd_status)

    # job
    job = sub.add_parser("job", help="manage jobs").add_subparsers(
        dest="job_command", metavar="SUBCOMMAND", required=True
    )
    p = client_cmd(job, "run", "submit or update a job from a spec file", cmd_job_run)
    p.add_argument("file", type=Path)
    p.add_argument("--namespace", "-n")
    p.add_argument("--name")
    p = client_cmd(job, "status", "list jobs, or show one job", cmd_job_status)
    p.add_argument("name", nargs="?")
    p.add_argument("--namespace", "-n")
    p = client_cmd(job, "scale", "change a job's count", cmd_job_scale)
    p.add_argument("name")
    p.add_argument("count", type=non_negative_int)
    p.add_argument("--namespace", "-n")
    p = client_cmd(job, "stop", "stop and remove a job", cmd_job_stop)
    p.add_argument("name")
    p.add_argument("--namespace", "-n")
    p = client_cmd(job, "versions", "list a job's versions, newest first", cmd_job_versions)
    p.add_argument("name")
    p.add_argument("--namespace", "-n")
    p = client_cmd(job, "revert", "submit an earlier version of a job again", cmd_job_revert)
    p.add_argument("name")
    p.add_argument("version", type=positive_int)
    p.add_argument("--namespace", "-n")

    # alloc
    alloc = sub.add_parser("alloc", help="inspect allocations").add_subparsers(
        dest="alloc_command", metavar="SUBCOMMAND", required=True
    )
    p = client_cmd(alloc, "list", "list allocations", cmd_alloc_list)
    p.add_argument("--namespace", "-n")
    p.add_argument("--job")
    p.add_argument("--node")
    p = client_cmd(alloc, "status", "show one allocation", cmd_alloc_status)
    p.add_argument("id")
    for action, help_text in (("pause", "pause an allocation's processes"),
                              ("resume", "resume a paused allocation"),
                              ("restart", "restart an allocation in place")):
        p = client_cmd(alloc, action, help_text, cmd_alloc_action)
        p.add_argument("id")
        p.set_defaults(action=action)
    p = client_cmd(alloc, "signal", "send a signal to an allocation", cmd_alloc_action)
    p.add_argument("id")
    p.add_argument("signal", type=signal_name, help="e.g. SIGHUP or HUP")
    p.set_defaults(action="signal")
    p = client_cmd(alloc, "logs", "print an allocation's output", cmd_alloc_logs,
                   json_flag=False)
    p.add_argument("id")
    p.add_argument("--stderr", action="store_true", help="standard error instead of output")
    p.add_argument("--tail", type=non_negative_int, default=100,
                   help="lines from the end to start with (default 100)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new output")

    # node
    node = sub.add_parser("node", help="inspect nodes").add_subparsers(
        dest="node_command", metavar="SUBCOMMAND", required=True
    )
    client_cmd(node, "list", "list nodes", cmd_node_list)
    p = client_cmd(node, "status", "show one node", cmd_node_status)
    p.add_argument("name")
    p = client_cmd(node, "drain", "move allocations off a node, or stop doing so", cmd_node_drain)
    p.add_argument("name")
    p.add_argument("--disable", action="store_true", help="end the drain")
    p.add_argument("--deadline", type=non_negative_float, default=60.0, metavar="S",
                   help="seconds before remaining allocations are stopped (default 60)")

    # events
    p = client_cmd(sub, "events", "show the cluster's recent events, or follow them",
                   cmd_events)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    p.add_argument("--index", type=non_negative_int, default=None,
                   help="only events after this log index")
    p.add_argument("--type", action="append", default=[], metavar="T[,T...]",
                   help="only events of these types")

    # namespace
    ns = sub.add_parser("namespace", help="manage namespaces and quotas").add_subparsers(
        dest="namespace_command", metavar="SUBCOMMAND", required=True
    )
    client_cmd(ns, "list", "list namespaces with quota and usage", cmd_namespace_list)
    p = client_cmd(ns, "status", "show one namespace", cmd_namespace_status)
    p.add_argument("namespace")
    p = client_cmd(
        ns, "set-quota", "set a namespace's quota (omitted limits are unlimited)", cmd_set_quota
    )
    p.add_argument("namespace")
    p.add_argument("--cpu", type=non_negative_float)
    p.add_argument("--memory-mb", type=non_negative_int)
    p.add_argument("--processes", type=non_negative_int)
    return parser


# --- entry point -------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help/--version (0) and on bad usage (2); callers of
        # main() want a return code, not an exception.
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if hasattr(args, "run"):
            return int(args.run(args) or 0)
        return run_client_command(args, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        return 130


def run_client_command(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    try:
        client = make_client(args)
        return int(args.handler(args, client, out))
    except UsageError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except ClientError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # Output piped into `head` and friends; not worth a traceback.
        return EXIT_OK


def make_client(args: argparse.Namespace) -> Client:
    addr = getattr(args, "addr", None) or os.environ.get("HACONTROL_ADDR") or DEFAULT_ADDR
    return Client(split_addrs(addr), token=resolve_token(args))


def resolve_token(args: argparse.Namespace) -> str | None:
    token = getattr(args, "token", None)
    if token:
        return str(token)
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"cannot read token file {token_file}: {exc.strerror or exc}"
            ) from None
        if not token:
            raise UsageError(f"token file {token_file} is empty")
        return token
    return os.environ.get("HACONTROL_TOKEN") or None


# --- server-side commands (implemented elsewhere; imported on use) ---------------


def _missing_component(exc: ModuleNotFoundError, module: str) -> bool:
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))


def run_server(args: argparse.Namespace) -> int:
    try:
        from hacontrol.server import serve
    except ModuleNotFoundError as exc:
        if not _missing_component(exc, "hacontrol.server"):
            raise
        print("error: the controller component (hacontrol.server) is not installed", file=sys.stderr)
        return EXIT_ERROR
    result = serve(args)
    return result if isinstance(result, int) else EXIT_OK


def run_agent(args: argparse.Namespace) -> int:
    try:
        from hacontrol.agent.main import run_agent as agent_main
    except ModuleNotFoundError as exc:
        if not _missing_component(exc, "hacontrol.agent.main"):
            raise
        print("error: the agent component (hacontrol.agent.main) is not installed", file=sys.stderr)
        return EXIT_ERROR
    result = agent_main(args)
    return result if isinstance(result, int) else EXIT_OK


def run_dev(args: argparse.Namespace) -> int:
    from hacontrol.cli.dev import run_dev as dev_main

    return dev_main(args)


# --- client commands ---------------------------------------------------------------


def _namespace(args: argparse.Namespace) -> str:
    return args.namespace or "default"


def _job_path(ns: str, name: str) -> str:
    return f"/v1/jobs/{quote(ns)}/{quote(name)}"


def cmd_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    status = client.get("/v1/status")
    if args.json:
        output.print_json(status, out)
    else:
        out.write(output.render_status(status) + "\n")
    return EXIT_OK


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
    result = client.put(_job_path(ns, name), body)
    if args.json:
        output.print_json(result, out)
        return EXIT_OK
    job = result.get("job") or {}
    out.write(
        f"Job {ns}/{job.get('name', name)} registered: version "
        f"{output.cell_text(job.get('version'))}, index {output.cell_text(result.get('index'))}\n"
    )
    return EXIT_OK


def cmd_job_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    if not args.name:
        result = client.get("/v1/jobs", {"namespace": args.namespace})
        if args.json:
            output.print_json(result, out)
        else:
            out.write(output.render_job_list(result.get("jobs") or []) + "\n")
        return EXIT_OK
    ns = _namespace(args)
    job_result = client.get(_job_path(ns, args.name))
    allocs_result = client.get("/v1/allocations", {"namespace": ns, "job": args.name})
    job = dict(job_result.get("job") or {})
    allocations = allocs_result.get("allocations") or []
    if args.json:
        output.print_json({"job": job, "allocations": allocations}, out)
    else:
        job.setdefault("name", args.name)
        job.setdefault("namespace", ns)
        out.write(output.render_job(job, allocations) + "\n")
    return EXIT_OK


def cmd_job_scale(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = _namespace(args)
    result = client.post(_job_path(ns, args.name) + "/scale", {"count": args.count})
    if args.json:
        output.print_json(result, out)
    else:
        out.write(f"Job {ns}/{args.name} scaled to {args.count}{_index_suffix(result)}\n")
    return EXIT_OK


def cmd_job_stop(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = _namespace(args)
    result = client.delete(_job_path(ns, args.name))
    if args.json:
        output.print_json(result, out)
    else:
        out.write(f"Job {ns}/{args.name} stopped{_index_suffix(result)}\n")
    return EXIT_OK


def _unwrap(result: Any, key: str) -> dict[str, Any]:
    # Accept both a bare object and one wrapped under its kind, e.g. {"namespace": {...}}.
    if isinstance(result, dict) and isinstance(result.get(key), dict):
        return dict(result[key])
    return dict(result) if isinstance(result, dict) else {}


def _index_suffix(result: Any) -> str:
    if isinstance(result, dict) and result.get("index") is not None:
        return f" (index {result['index']})"
    return ""


def cmd_alloc_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(
        "/v1/allocations", {"namespace": args.namespace, "job": args.job, "node": args.node}
    )
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.render_alloc_list(result.get("allocations") or []) + "\n")
    return EXIT_OK


def cmd_alloc_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/allocations/{quote(args.id)}")
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.render_alloc(_unwrap(result, "allocation")) + "\n")
    return EXIT_OK


def cmd_node_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/nodes")
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.render_node_list(result.get("nodes") or []) + "\n")
    return EXIT_OK


def cmd_namespace_list(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get("/v1/namespaces")
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.render_namespace_list(result.get("namespaces") or []) + "\n")
    return EXIT_OK


def cmd_namespace_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/namespaces/{quote(args.namespace)}")
    if args.json:
        output.print_json(result, out)
    else:
        ns = _unwrap(result, "namespace")
        ns.setdefault("name", args.namespace)
        out.write(output.render_namespace(ns) + "\n")
    return EXIT_OK


def cmd_set_quota(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    quota = {"cpu": args.cpu, "memory_mb": args.memory_mb, "processes": args.processes}
    result = client.put(f"/v1/namespaces/{quote(args.namespace)}", {"quota": quota})
    if args.json:
        output.print_json(result, out)
    else:
        ns = _unwrap(result, "namespace") or {"quota": quota}
        ns.setdefault("name", args.namespace)
        out.write(output.render_namespace(ns) + "\n")
    return EXIT_OK


def cmd_job_versions(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = _namespace(args)
    result = client.get(_job_path(ns, args.name) + "/versions")
    if args.json:
        output.print_json(result, out)
    else:
        out.write(output.render_versions(result.get("versions") or []) + "\n")
    return EXIT_OK


def cmd_job_revert(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    ns = _namespace(args)
    result = client.post(_job_path(ns, args.name) + "/revert", {"version": args.version})
    if args.json:
        output.print_json(result, out)
        return EXIT_OK
    job = _unwrap(result, "job")
    out.write(
        f"Job {ns}/{args.name} reverted to version {args.version}: now version "
        f"{output.cell_text(job.get('version'))}{_index_suffix(result)}\n"
    )
    return EXIT_OK


def cmd_node_status(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    result = client.get(f"/v1/nodes/{quote(args.name)}")
    if args.json:
        output.print_json(result, out)
    else:
        node = _unwrap(result, "node")
        node.setdefault("name", args.name)
        out.write(output.render_node(node) + "\n")
    return EXIT_OK


def cmd_node_drain(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    enable = not args.disable
    deadline: float | int = args.deadline
    if float(deadline).is_integer():
        deadline = int(deadline)
    result = client.post(
        f"/v1/nodes/{quote(args.name)}/drain", {"enable": enable, "deadline_s": deadline}
    )
    if args.json:
        output.print_json(result, out)
    elif enable:
        out.write(
            f"Node {args.name} draining (deadline {output.format_number(deadline)}s)"
            f"{_index_suffix(result)}\n"
        )
    else:
        out.write(f"Node {args.name} drain disabled{_index_suffix(result)}\n")
    return EXIT_OK


ACTION_DONE = {"pause": "paused", "resume": "resumed", "restart": "restarted",
               "signal": "signalled"}


def cmd_alloc_action(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    body: dict[str, Any] = {}
    if args.action == "signal":
        body = {"signal": args.signal}
    result = client.post(f"/v1/allocations/{quote(args.id)}/{args.action}", body)
    if args.json:
        output.print_json(result, out)
        return EXIT_OK
    what = ACTION_DONE.get(args.action, args.action)
    if args.action == "signal":
        what += f" with {args.signal}"
    line = f"Allocation {args.id} {what}"
    alloc = result.get("allocation") if isinstance(result, dict) else None
    if isinstance(alloc, dict) and alloc.get("state"):
        line += f": state {alloc['state']}"
        if alloc.get("pid") is not None:
            line += f", pid {alloc['pid']}"
    out.write(line + "\n")
    return EXIT_OK


def _binary_out(out: IO[str]) -> Callable[[bytes], None]:
    """Write raw bytes to out's underlying buffer so log output passes through unchanged."""
    buffer = getattr(out, "buffer", None)
    if buffer is None:
        def write_text(chunk: bytes) -> None:
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        return write_text
    out.flush()

    def write(chunk: bytes) -> None:
        buffer.write(chunk)
        buffer.flush()
    return write


def cmd_alloc_logs(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    query = {"stream": "stderr" if args.stderr else "stdout", "tail": args.tail,
             "follow": "true" if args.follow else "false"}
    write = _binary_out(out)
    try:
        # A followed log may stay quiet for hours; without follow the body is finite.
        with client.stream(
            f"/v1/allocations/{quote(args.id)}/logs", query,
            read_timeout_s=None if args.follow else client.timeout_s,
        ) as stream:
            while True:
                chunk = stream.read_chunk()
                if not chunk:
                    return EXIT_OK
                write(chunk)
    except StreamBroken as exc:
        raise ClientError(0, "stream_broken", f"log stream interrupted: {exc}") from None
    except KeyboardInterrupt:
        return EXIT_OK


# The server sends a comment at least every ten seconds; silence for longer than
# this means the connection is gone even if no error has surfaced.
EVENTS_READ_TIMEOUT_S = 35.0


@dataclass
class SseEvent:
    id: str | None
    event: str
    data: str


def read_sse(stream: Stream) -> Iterator[SseEvent]:
    """Server-sent events from a stream until it ends (an unfinished event is dropped)."""
    event_id: str | None = None
    kind = "message"
    data: list[str] = []
    while True:
        raw = stream.readline()
        if not raw.endswith(b"\n"):
            # The end of the stream, possibly mid-line: whatever is half-read is lost
            # here and sent again after reconnecting from the last complete event.
            return
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data or event_id is not None:
                yield SseEvent(event_id, kind, "\n".join(data))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            event_id = value
        elif name == "event":
            kind = value
        elif name == "data":
            data.append(value)


def _event_types(args: argparse.Namespace) -> str | None:
    kinds = [t.strip() for v in args.type for t in v.split(",") if t.strip()]
    return ",".join(kinds) or None


def _print_event(args: argparse.Namespace, event: Any, out: IO[str]) -> None:
    if args.json:
        out.write(json.dumps(event, sort_keys=True) + "\n")
    elif isinstance(event, dict):
        out.write(output.event_line(event) + "\n")
    else:
        out.write(output.cell_text(event) + "\n")


def cmd_events(args: argparse.Namespace, client: Client, out: IO[str]) -> int:
    types = _event_types(args)
    if not args.follow:
        result = client.get("/v1/events", {"index": args.index, "follow": "false", "type": types})
        if args.json:
            output.print_json(result, out)
            return EXIT_OK
        events = result.get("events") or []
        for event in events:
            _print_event(args, event, out)
        if not events:
            out.write("No events.\n")
        return EXIT_OK
    try:
        return _follow_events(args, client, out, types)
    except KeyboardInterrupt:
        return EXIT_OK


def _follow_events(
    args: argparse.Namespace, client: Client, out: IO[str], types: str | None
) -> int:
    last_id: Any = args.index
    quiet_drops = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        query = {"index": str(last_id).partition(".")[0] if last_id is not None else None,
                 "follow": "true", "type": types}
        got_any = False
        try:
            with client.stream("/v1/events", query, headers,
                               read_timeout_s=EVENTS_READ_TIMEOUT_S) as stream:
                for sse in read_sse(stream):
                    got_any = True
                    last_id = _handle_sse(args, sse, last_id, out)
        except StreamBroken:
            pass
        # The stream ended or broke: resume elsewhere from the last event seen. A
        # server that keeps hanging up without sending anything is backed off from.
        quiet_drops = 0 if got_any else quiet_drops + 1
        client.rotate()
        if quiet_drops:
            if quiet_drops > client.retry.attempts:
                raise ClientError(0, "stream_broken", "the event stream keeps closing")
            client.sleep(client.backoff(quiet_drops - 1))


def _handle_sse(args: argparse.Namespace, sse: SseEvent, last_id: Any,
                out: IO[str]) -> Any:
    try:
        data: Any = json.loads(sse.data) if sse.data else {}
    except ValueError:
        data = sse.data
    if sse.event == "truncated":
        oldest = data.get("oldest_index") if isinstance(data, dict) else None
        sys.stderr.write(
            f"warning: events before index {output.cell_text(oldest)} are no longer kept\n"
        )
        return last_id
    event_id = _event_key(sse.id)
    # Ids are "INDEX.SEQ" (several events may share a log index): anything not newer than
    # the last one printed is a repeat after a reconnect.
    if event_id is not None and last_id is not None and event_id <= _event_key(last_id):
        return last_id
    _print_event(args, data, out)
    out.flush()
    return sse.id if event_id is not None else last_id


def _event_key(raw: Any) -> tuple[int, int] | None:
    if raw is None:
        return None
    head, _, tail = str(raw).partition(".")
    try:
        return (int(head), int(tail) if tail else 10**9)
    except ValueError:
        return None
