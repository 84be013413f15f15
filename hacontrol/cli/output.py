"""Rendering API responses as aligned text tables or raw JSON."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from hacontrol.cli import colour
from hacontrol.model.text import strip_terminal_controls

MISSING = "-"


def terminal_safe(text: str) -> str:
    """Server-provided `text` as it may reach a terminal: names, messages and labels come
    from other users and agents, and an escape sequence in one must print, not act."""
    return strip_terminal_controls(text)


def human(text: str, out: IO[str]) -> str:
    """Server-provided `text` made terminal-safe, with colour when `out` is a terminal
    (see `colour`)."""
    safe = terminal_safe(text)
    return colour.paint(safe) if colour.enabled(out) else safe


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def print_json(value: Any, out: IO[str]) -> None:
    out.write(to_json(value) + "\n")


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces, no trailing whitespace."""
    text_rows = [[cell_text(c) for c in row] for row in rows]
    width = len(headers)
    for row in text_rows:
        if len(row) != width:
            raise ValueError(f"row has {len(row)} cells, expected {width}")
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *text_rows]:
        line = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row))
        lines.append(line.rstrip())
    return "\n".join(lines)


def format_kv(pairs: Iterable[tuple[str, Any]]) -> str:
    """A two-column "label  value" block for showing a single object."""
    items = [(label, cell_text(value)) for label, value in pairs]
    if not items:
        return ""
    width = max(len(label) for label, _ in items)
    return "\n".join(f"{label.ljust(width)}  {value}".rstrip() for label, value in items)


def cell_text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(cell_text(v) for v in value) if value else MISSING
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    # Cells must stay on one line or the table stops lining up.
    return terminal_safe(str(value)).replace("\n", "\\n")


def format_number(value: float | int | None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def format_age(timestamp: Any, now: float | None = None) -> str:
    """How long ago an epoch timestamp was, in the largest sensible unit."""
    if timestamp is None or timestamp == "":
        return MISSING
    if not isinstance(timestamp, (int, float)) or isinstance(timestamp, bool):
        return str(timestamp)
    now = time.time() if now is None else now
    delta = now - float(timestamp)
    suffix = " ago"
    if delta < 0:
        # Clock skew between replicas and this machine; "in" reads better than "-3s ago".
        delta = -delta
        suffix = " ahead"
    seconds = int(delta)
    if seconds < 60:
        text = f"{seconds}s"
    elif seconds < 3600:
        text = f"{seconds // 60}m{seconds % 60:02d}s"
    elif seconds < 86400:
        text = f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    else:
        text = f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"
    return text + suffix


def used_of(used: Any, limit: Any) -> str:
    """"used/limit" where an absent limit means unlimited."""
    limit_text = "unlimited" if limit is None else format_number(limit)
    used_text = format_number(used) if isinstance(used, (int, float)) else cell_text(used)
    return f"{used_text}/{limit_text}"


def exit_text(alloc: Mapping[str, Any]) -> str:
    signal = alloc.get("signal")
    code = alloc.get("exit_code")
    if signal not in (None, "", 0):
        return f"signal {signal}"
    return MISSING if code is None else str(code)


# --- per-command renderers -------------------------------------------------


def render_status(status: Mapping[str, Any]) -> str:
    leader = status.get("leader")
    leader_api = status.get("leader_api")
    leader_text = cell_text(leader)
    if leader and leader_api:
        leader_text = f"{leader} ({leader_api})"
    head = format_kv(
        [
            ("ID", status.get("id")),
            ("Role", status.get("role")),
            ("Leader", leader_text if leader else "none"),
            ("Term", status.get("term")),
            ("Commit index", status.get("commit_index")),
            ("Applied index", status.get("applied_index")),
            ("PID", status.get("pid")),
        ]
        # A replica of protocol 1 reports no version: show nothing rather than guess.
        + ([("Protocol", status.get("protocol"))] if "protocol" in status else [])
        + ([("Waiting", "command types refused until every replica knows them: "
             + ", ".join(map(str, status["ops_waiting"])))]
           if status.get("ops_waiting") else [])
    )
    members = status.get("members") or []
    seen = status.get("member_protocols")
    versions = isinstance(seen, dict)
    table = format_table(
        ["MEMBER", "RAFT", "API", "LEADER"] + (["PROTOCOL"] if versions else []),
        [
            [m.get("id"), m.get("raft"), m.get("api"), "*" if m.get("id") == leader else ""]
            + ([cell_text(seen.get(m.get("id")))] if isinstance(seen, dict) else [])
            for m in members
        ],
    )
    return f"{head}\n\n{table}"


def render_job_list(jobs: Sequence[Mapping[str, Any]]) -> str:
    if not jobs:
        return "No jobs."
    rows = []
    for job in jobs:
        counts = job.get("counts") or {}
        rows.append(
            [
                job.get("namespace"),
                job.get("name"),
                job.get("version"),
                job.get("status"),
                counts.get("desired", job.get("count")),
                counts.get("running"),
                counts.get("pending"),
                counts.get("failed"),
            ]
        )
    return format_table(
        ["NAMESPACE", "NAME", "VERSION", "STATUS", "DESIRED", "RUNNING", "PENDING", "FAILED"],
        rows,
    )


def render_job(
    job: Mapping[str, Any], allocations: Sequence[Mapping[str, Any]], now: float | None = None
) -> str:
    counts = job.get("counts") or {}
    command = job.get("command")
    if isinstance(command, list):
        command_text = shlex.join(str(c) for c in command)
    else:
        command_text = cell_text(command)
    resources = job.get("resources") or {}
    restart = job.get("restart") or {}
    pairs: list[tuple[str, Any]] = [
        ("Name", job.get("name")),
        ("Namespace", job.get("namespace")),
        ("Version", job.get("version")),
        ("Status", job.get("status")),
        ("Command", command_text),
        ("Count", job.get("count")),
    ]
    if job.get("cwd"):
        pairs.append(("Working dir", job.get("cwd")))
    if resources:
        pairs.append(
            ("Resources", f"cpu={format_number(resources.get('cpu'))} "
             f"memory_mb={format_number(resources.get('memory_mb'))}")
        )
    if restart:
        pairs.append(("Restart", restart.get("policy")))
    deployment = job.get("deployment")
    if isinstance(deployment, Mapping) and deployment:
        pairs.append(("Deployment", deployment_text(deployment)))
    if counts:
        pairs.append(
            (
                "Allocations",
                f"desired={cell_text(counts.get('desired'))} "
                f"running={cell_text(counts.get('running'))} "
                f"pending={cell_text(counts.get('pending'))} "
                # older replicas do not count the queued ones (waiting for a node)
                + (f"queued={cell_text(counts['queued'])} " if "queued" in counts else "")
                + f"failed={cell_text(counts.get('failed'))}",
            )
        )
    head = format_kv(pairs)
    return f"{head}\n\n{render_alloc_list(allocations, now=now, with_job=False)}"


def render_alloc_list(
    allocations: Sequence[Mapping[str, Any]], now: float | None = None, with_job: bool = True
) -> str:
    if not allocations:
        return "No allocations."
    headers = ["ID"]
    if with_job:
        headers += ["NAMESPACE", "JOB"]
    with_health = any(a.get("health") for a in allocations)
    headers += ["NODE", "STATE", "DESIRED"]
    if with_health:
        headers.append("HEALTH")
    headers += ["PID", "RESTARTS", "EXIT", "UPDATED"]
    rows = []
    for a in allocations:
        row: list[Any] = [a.get("id")]
        if with_job:
            row += [a.get("namespace"), a.get("job")]
        row += [a.get("node"), a.get("state"), a.get("desired")]
        if with_health:
            row.append(a.get("health"))
        row += [
            a.get("pid"),
            a.get("restarts"),
            exit_text(a),
            format_age(a.get("updated_at", a.get("created_at")), now),
        ]
        rows.append(row)
    text = format_table(headers, rows)
    # Why an instance is not placed is too long for a column; list it below the table.
    pending = [(a.get("id"), a.get("pending_reason")) for a in allocations
               if a.get("pending_reason")]
    if pending:
        text += "\n\n" + "\n".join(
            f"{cell_text(alloc_id)} pending: {cell_text(reason)}" for alloc_id, reason in pending
        )
    return text


def deployment_text(deployment: Mapping[str, Any]) -> str:
    text = f"version {cell_text(deployment.get('version'))} {cell_text(deployment.get('status'))}"
    if deployment.get("reverted_from") is not None:
        text += f" (revert of version {cell_text(deployment.get('reverted_from'))})"
    return text


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """ "cpu 12.5%, rss 40.2 MB" from an instance's sampled metrics."""
    parts = []
    cpu = metrics.get("cpu_percent")
    if isinstance(cpu, (int, float)) and not isinstance(cpu, bool):
        parts.append(f"cpu {cpu:.1f}%")
    rss = metrics.get("rss_bytes")
    if isinstance(rss, (int, float)) and not isinstance(rss, bool):
        parts.append(f"rss {rss / (1024 * 1024):.1f} MB")
    return ", ".join(parts) or MISSING


def render_alloc(alloc: Mapping[str, Any], now: float | None = None) -> str:
    resources = alloc.get("resources") or {}
    pairs: list[tuple[str, Any]] = [
        ("ID", alloc.get("id")),
        ("Job", f"{cell_text(alloc.get('namespace'))}/{cell_text(alloc.get('job'))}"),
        ("Version", alloc.get("version")),
        ("Node", alloc.get("node")),
        ("State", alloc.get("state")),
        ("Desired", alloc.get("desired")),
    ]
    for label, key in (("Health", "health"), ("Reason", "reason"),
                       ("Pending reason", "pending_reason")):
        if alloc.get(key):
            pairs.append((label, alloc.get(key)))
    pairs += [
        ("PID", alloc.get("pid")),
        ("Restarts", alloc.get("restarts")),
        ("Exit", exit_text(alloc)),
    ]
    if alloc.get("message"):
        pairs.append(("Message", alloc.get("message")))
    if resources:
        pairs.append(("Resources", f"cpu={format_number(resources.get('cpu'))} "
                      f"memory_mb={format_number(resources.get('memory_mb'))}"))
    ports = alloc.get("ports")
    if isinstance(ports, Mapping) and ports:
        pairs.append(("Ports", " ".join(f"{cell_text(k)}={cell_text(v)}"
                                        for k, v in sorted(ports.items()))))
    metrics = alloc.get("metrics")
    if isinstance(metrics, Mapping) and metrics:
        pairs.append(("Metrics", metrics_text(metrics)))
    pairs += [
        ("Created", format_age(alloc.get("created_at"), now)),
        ("Updated", format_age(alloc.get("updated_at"), now)),
    ]
    if alloc.get("running_since") is not None:
        pairs.append(("Running since", format_age(alloc.get("running_since"), now)))
    known = {"id", "namespace", "job", "version", "node", "state", "desired", "health",
             "reason", "pending_reason", "pid", "restarts", "exit_code", "signal", "message",
             "resources", "metrics", "created_at", "updated_at", "running_since",
             "placed_at", "modify_index"}
    # Fields this client does not know yet are still worth seeing.
    pairs += [(k, v) for k, v in sorted(alloc.items()) if k not in known and v is not None]
    return format_kv(pairs)


def render_node(node: Mapping[str, Any], now: float | None = None) -> str:
    cap = node.get("capacity") or {}
    free = node.get("free") or {}
    drain = node.get("drain")
    drain_text = cell_text(bool(drain))
    if drain and node.get("drain_deadline") is not None:
        drain_text += f" (deadline {format_age(node.get('drain_deadline'), now)})"
    pairs: list[tuple[str, Any]] = [
        ("Name", node.get("name")),
        ("Status", node.get("status")),
        ("Address", node.get("address")),
        ("Drain", drain_text),
        ("Eligible", node.get("eligible")),
        ("Labels", key_values(node.get("labels"))),
        ("Attributes", key_values(node.get("attributes"))),
        ("CPU free", f"{format_number(free.get('cpu'))}/{format_number(cap.get('cpu'))}"),
        ("Memory MB free",
         f"{format_number(free.get('memory_mb'))}/{format_number(cap.get('memory_mb'))}"),
        ("Allocations", node.get("allocations")),
        ("Heartbeat", format_age(node.get("last_heartbeat"), now)),
    ]
    agent = node.get("agent")
    if agent is not None:
        pairs.append(("Agent", key_values(agent) if isinstance(agent, Mapping) else agent))
    return format_kv(pairs)


def key_values(value: Any) -> str:
    if isinstance(value, Mapping):
        return " ".join(f"{k}={cell_text(v)}" for k, v in sorted(value.items())) or MISSING
    return cell_text(value)


def render_versions(versions: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    if not versions:
        return "No versions."
    rows = []
    for v in versions:
        spec = v.get("spec") or {}
        command = spec.get("command") if isinstance(spec, Mapping) else None
        if isinstance(command, list):
            command_text = shlex.join(str(c) for c in command)
        else:
            command_text = cell_text(command)
        rows.append([v.get("version"), format_age(v.get("submitted_at"), now), v.get("stable"),
                     command_text])
    return format_table(["VERSION", "SUBMITTED", "STABLE", "COMMAND"], rows)


EVENT_META = ("index", "ts", "type", "seq", "id")


def _event_value(value: Any) -> str:
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple, dict)) for v in value):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return cell_text(value)


def event_line(event: Mapping[str, Any]) -> str:
    """One event on one line: time, index, type, then its own fields as key=value."""
    ts = event.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    else:
        when = MISSING
    fields = " ".join(f"{k}={_event_value(v)}" for k, v in event.items() if k not in EVENT_META)
    line = f"{when}  {cell_text(event.get('index'))}  {cell_text(event.get('type'))}"
    return terminal_safe(f"{line}  {fields}" if fields else line)


def render_node_list(nodes: Sequence[Mapping[str, Any]], now: float | None = None) -> str:
    if not nodes:
        return "No nodes."
    rows = []
    for n in nodes:
        cap = n.get("capacity") or {}
        free = n.get("free") or {}
        rows.append(
            [
                n.get("name"),
                n.get("status"),
                f"{format_number(free.get('cpu'))}/{format_number(cap.get('cpu'))}",
                f"{format_number(free.get('memory_mb'))}/{format_number(cap.get('memory_mb'))}",
                format_age(n.get("last_heartbeat"), now),
            ]
        )
    return format_table(["NAME", "STATUS", "CPU FREE", "MEMORY MB FREE", "HEARTBEAT"], rows)


def render_namespace_list(namespaces: Sequence[Mapping[str, Any]]) -> str:
    if not namespaces:
        return "No namespaces."
    rows = []
    for ns in namespaces:
        quota = ns.get("quota") or {}
        usage = ns.get("usage") or {}
        rows.append(
            [
                ns.get("name"),
                used_of(usage.get("cpu", 0), quota.get("cpu")),
                used_of(usage.get("memory_mb", 0), quota.get("memory_mb")),
                used_of(usage.get("processes", 0), quota.get("processes")),
            ]
        )
    return format_table(["NAME", "CPU", "MEMORY MB", "PROCESSES"], rows)


def render_namespace(ns: Mapping[str, Any]) -> str:
    quota = ns.get("quota") or {}
    usage = ns.get("usage") or {}
    head = format_kv([("Name", ns.get("name"))])
    table = format_table(
        ["RESOURCE", "USED", "QUOTA"],
        [
            [key, format_number(usage.get(key, 0)), "unlimited" if quota.get(key) is None
             else format_number(quota.get(key))]
            for key in ("cpu", "memory_mb", "processes")
        ],
    )
    return f"{head}\n\n{table}"
