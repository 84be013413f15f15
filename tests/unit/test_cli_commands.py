"""Node, version, event, allocation-control and log commands, end to end over an
in-memory API behind the client's transport seam (two addresses, to see which one a
reconnect reaches).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError
from hacontrol.cli.main import build_parser, main, run_client_command
from hacontrol.cli.transport import IterStream, Response, StreamBroken

from .cli_fake import FakeApi, Seen, not_found


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(default=not_found)


def run(api: FakeApi, *argv: str) -> int:
    return api.run(*argv)


def streaming(chunks: Callable[[Seen], Iterator[bytes]],
              content_type: str = "text/plain") -> Callable[[Seen], Response]:
    """A route whose body is produced chunk by chunk while the client reads it."""
    def route(seen: Seen) -> Response:
        return Response(200, {"Content-Type": content_type}, stream=IterStream(chunks(seen)))
    return route


# --- nodes -----------------------------------------------------------------------------

NODE = {"name": "n1", "status": "ready", "address": "http://10.0.0.5:8200",
        "labels": {"zone": "a", "disk": "ssd"}, "attributes": {"os": "linux"},
        "drain": True, "drain_deadline": None, "eligible": False,
        "capacity": {"cpu": 4.0, "memory_mb": 2048}, "free": {"cpu": 3.5, "memory_mb": 1024},
        "allocations": 2, "last_heartbeat": None, "agent": "0.3.0"}


def test_node_drain_enable_and_disable(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/nodes/n1/drain", {"node": NODE, "index": 41})
    assert run(api, "node", "drain", "n1", "--deadline", "30") == 0
    assert api.last.body == {"enable": True, "deadline_s": 30}
    assert api.last.headers["Authorization"] == "Bearer sekrit"
    assert "Idempotency-Key" in api.last.headers
    assert capsys.readouterr().out == "Node n1 draining (deadline 30s) (index 41)\n"

    assert run(api, "node", "drain", "n1", "--disable") == 0
    assert api.last.body == {"enable": False, "deadline_s": 60}
    assert capsys.readouterr().out == "Node n1 drain disabled (index 41)\n"

    assert run(api, "node", "drain", "n1", "--deadline", "1.5", "--json") == 0
    assert api.last.body == {"enable": True, "deadline_s": 1.5}
    assert json.loads(capsys.readouterr().out)["index"] == 41
    assert run(api, "node", "drain", "n1", "--deadline", "-1") == 2


def test_node_status(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/nodes/n1", {"node": NODE})
    assert run(api, "node", "status", "n1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Labels          disk=ssd zone=a" in lines
    assert "Drain           yes" in lines
    assert "Eligible        no" in lines
    assert "CPU free        3.5/4" in lines
    assert "Memory MB free  1024/2048" in lines
    assert "Agent           0.3.0" in lines
    assert run(api, "node", "status", "n1", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"node": NODE}


# --- versions and revert -------------------------------------------------------------------


def test_job_versions_table(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    versions = [
        {"version": 2, "spec": {"command": ["sh", "-c", "echo b"]}, "submitted_at": None,
         "stable": False},
        {"version": 1, "spec": {"command": ["sleep", "1"]}, "submitted_at": None,
         "stable": True},
    ]
    api.reply("GET", "/v1/jobs/ops/web/versions", {"versions": versions})
    assert run(api, "job", "versions", "web", "-n", "ops") == 0
    assert capsys.readouterr().out.splitlines() == [
        "VERSION  SUBMITTED  STABLE  COMMAND",
        "2        -          no      sh -c 'echo b'",
        "1        -          yes     sleep 1",
    ]
    assert run(api, "job", "versions", "web", "-n", "ops", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"versions": versions}
    assert output.render_versions([]) == "No versions."


def test_job_revert(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/jobs/default/web/revert", {"job": {"version": 5}, "index": 90})
    assert run(api, "job", "revert", "web", "2") == 0
    assert api.last.body == {"version": 2}
    assert capsys.readouterr().out == (
        "Job default/web reverted to version 2: now version 5 (index 90)\n")
    assert run(api, "job", "revert", "web", "0") == 2
    assert run(api, "job", "revert", "web", "two") == 2


# --- job and allocation status details --------------------------------------------------------


def test_job_status_shows_deployment_health_and_pending_reason(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    job = {"namespace": "default", "name": "web", "version": 3, "status": "running",
           "command": ["sleep", "9"], "count": 2,
           "deployment": {"version": 3, "status": "running"}}
    allocs = [
        {"id": "web-1", "node": "n1", "state": "running", "desired": "run",
         "health": "healthy", "updated_at": None},
        {"id": "web-2", "node": None, "state": "pending", "desired": "run",
         "pending_reason": "no node has 512 MB free", "updated_at": None},
    ]
    api.reply("GET", "/v1/jobs/default/web", {"job": job})
    api.reply("GET", "/v1/allocations", {"allocations": allocs})
    assert run(api, "job", "status", "web") == 0
    text = capsys.readouterr().out
    assert "Deployment  version 3 running" in text
    header = next(line for line in text.splitlines() if line.startswith("ID"))
    assert header.split() == ["ID", "NODE", "STATE", "DESIRED", "HEALTH", "PID", "RESTARTS",
                              "EXIT", "UPDATED"]
    assert "healthy" in text
    assert "web-2 pending: no node has 512 MB free" in text


def test_alloc_status_shows_health_reason_and_metrics(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    alloc = {"id": "web-1", "namespace": "default", "job": "web", "version": 2, "node": "n1",
             "state": "running", "desired": "run", "pid": 77, "restarts": 1,
             "exit_code": None, "signal": None, "health": "unhealthy",
             "reason": "health check failed", "created_at": None, "updated_at": None,
             "metrics": {"cpu_percent": 12.345, "rss_bytes": 50 * 1024 * 1024}}
    api.reply("GET", "/v1/allocations/web-1", {"allocation": alloc})
    assert run(api, "alloc", "status", "web-1") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "Health    unhealthy" in lines
    assert "Reason    health check failed" in lines
    assert "Metrics   cpu 12.3%, rss 50.0 MB" in lines
    assert not any(line.startswith("Pending") for line in lines)
    pending = {"id": "web-2", "state": "pending", "pending_reason": "quota exceeded"}
    assert "Pending reason  quota exceeded" in output.render_alloc(pending)


# --- allocation controls --------------------------------------------------------------------


@pytest.mark.parametrize(("action", "done"),
                         [("pause", "paused"), ("resume", "resumed"), ("restart", "restarted")])
def test_alloc_actions(api: FakeApi, capsys: pytest.CaptureFixture[str], action: str,
                       done: str) -> None:
    api.reply("POST", f"/v1/allocations/web-1/{action}",
              {"allocation": {"id": "web-1", "state": "running", "pid": 9}, "action": action})
    assert run(api, "alloc", action, "web-1") == 0
    assert (api.last.method, api.last.body) == ("POST", {})
    assert capsys.readouterr().out == f"Allocation web-1 {done}: state running, pid 9\n"


def test_alloc_signal(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/allocations/web-1/signal", {"allocation": None, "action": "signal"})
    assert run(api, "alloc", "signal", "web-1", "hup") == 0
    assert api.last.body == {"signal": "SIGHUP"}
    assert capsys.readouterr().out == "Allocation web-1 signalled with SIGHUP\n"
    assert run(api, "alloc", "signal", "web-1", "SIGUSR1", "--json") == 0
    assert api.last.body == {"signal": "SIGUSR1"}
    assert json.loads(capsys.readouterr().out)["action"] == "signal"
    assert run(api, "alloc", "signal", "web-1", "HUP;x") == 2


def test_alloc_action_error(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/allocations/web-1/pause",
              {"error": {"code": "conflict", "message": "not placed"}}, status=409)
    assert run(api, "alloc", "pause", "web-1") == 1
    assert capsys.readouterr().err == "error: not placed\n"


# --- logs --------------------------------------------------------------------------------------


class ByteSink:
    """Stands in for stdout: a text side and the bytes underneath it."""

    def __init__(self, on_write: Callable[[bytes], None] | None = None) -> None:
        self.buffer = self
        self.data = b""
        self.on_write = on_write

    def write(self, chunk: Any) -> int:
        if isinstance(chunk, str):
            chunk = chunk.encode()
        self.data += chunk
        if self.on_write is not None:
            self.on_write(self.data)
        return len(chunk)

    def flush(self) -> None:
        pass


def run_with_out(api: FakeApi, out: Any, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args([*argv, "--addr", ",".join(api.urls), "--token", "t"])
    err = io.StringIO()
    return run_client_command(args, out, err, api.transport), err.getvalue()


def test_alloc_logs_writes_each_part_as_it_arrives(api: FakeApi) -> None:
    out = ByteSink()
    printed_before_next: list[bool] = []

    def logs(seen: Seen) -> Iterator[bytes]:
        yield b"first line\n"
        # The second part is only asked for once the first has been printed.
        printed_before_next.append(out.data == b"first line\n")
        yield b"second \xff line\n"

    api.routes[("GET", "/v1/allocations/web-1/logs")] = streaming(logs)
    code, err = run_with_out(api, out, "alloc", "logs", "web-1", "-f", "--stderr",
                             "--tail", "5")
    assert (code, err) == (0, "")
    assert printed_before_next == [True]
    assert out.data == b"first line\nsecond \xff line\n"
    assert api.last.query == {"stream": "stderr", "tail": "5", "follow": "true"}
    assert api.last.headers["Authorization"] == "Bearer t"
    # A followed log may stay quiet for hours: no read timeout.
    assert api.last.request.stream and api.last.request.read_timeout_s is None


def test_alloc_logs_defaults_and_ctrl_c(api: FakeApi) -> None:
    bodies: list[IterStream] = []

    def route(seen: Seen) -> Response:
        body = IterStream(iter([b"hello\n", b"more\n"]))
        bodies.append(body)
        return Response(200, {"Content-Type": "text/plain"}, stream=body)

    api.routes[("GET", "/v1/allocations/web-1/logs")] = route

    def interrupt(data: bytes) -> None:
        raise KeyboardInterrupt

    out = ByteSink(interrupt)
    code, err = run_with_out(api, out, "alloc", "logs", "web-1")
    assert (code, err) == (0, "")
    assert out.data == b"hello\n"
    assert api.last.query == {"stream": "stdout", "tail": "100", "follow": "false"}
    assert api.last.request.read_timeout_s == 10.0
    assert [b.closed for b in bodies] == [True]


def test_alloc_logs_broken_stream_is_an_error(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def logs(seen: Seen) -> Iterator[bytes]:
        yield b"part\n"
        raise StreamBroken("Connection reset by peer")

    api.routes[("GET", "/v1/allocations/web-1/logs")] = streaming(logs)
    assert run(api, "alloc", "logs", "web-1") == 1
    assert capsys.readouterr() == (
        "part\n", "error: log stream interrupted: Connection reset by peer\n")


def test_alloc_logs_error_answer(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/allocations/gone/logs",
              {"error": {"code": "not_found", "message": "allocation 'gone' not found"}},
              status=404)
    assert run(api, "alloc", "logs", "gone") == 1
    assert capsys.readouterr().err == "error: allocation 'gone' not found\n"


# --- events ------------------------------------------------------------------------------------


def event(index: int, kind: str, seq: int = 0, **payload: Any) -> dict[str, Any]:
    return {"index": index, "seq": seq, "id": f"{index}.{seq}", "ts": 1700000000.0 + index,
            "type": kind, **payload}


def sse(ev: dict[str, Any]) -> bytes:
    return f"id: {ev['id']}\nevent: {ev['type']}\ndata: {json.dumps(ev)}\n\n".encode()


def test_events_without_follow(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    evs = [event(7, "job_scaled", namespace="default", job="web", count=3),
           event(8, "allocs_placed", placements=[["web-1", "n1"]])]
    api.reply("GET", "/v1/events", {"events": evs, "index": 8, "oldest_index": 1})
    assert run(api, "events", "--index", "6", "--type", "job_scaled,allocs_placed") == 0
    assert api.last.query == {"index": "6", "follow": "false",
                              "type": "job_scaled,allocs_placed"}
    assert capsys.readouterr().out.splitlines() == [
        "2023-11-14T22:13:27Z  7  job_scaled  namespace=default job=web count=3",
        '2023-11-14T22:13:28Z  8  allocs_placed  placements=[["web-1","n1"]]',
    ]
    assert run(api, "events", "--json") == 0
    assert api.last.query == {"follow": "false"}
    assert json.loads(capsys.readouterr().out)["oldest_index"] == 1


def test_events_follow_resumes_after_a_drop_without_loss_or_repeats(api: FakeApi) -> None:
    evs = [event(3, "job_registered", job="web"), event(4, "node_ready", node="n1"),
           event(4, "node_drain", 1, node="n1", enable=True), event(5, "job_stopped", job="web"),
           event(6, "node_down", node="n1")]

    def stream(seen: Seen) -> Iterator[bytes]:
        if len(api.seen) == 1:
            yield b": keep-alive\n\n"
            for ev in evs[:3]:
                yield sse(ev)
            # Half of the next event, then the connection is cut.
            yield sse(evs[3])[:20]
            raise StreamBroken("Connection reset by peer")
        head, _, tail = seen.headers["Last-Event-ID"].partition(".")
        after = (int(head), int(tail or -1))
        for ev in evs:
            if (ev["index"], ev["seq"]) > after:
                yield sse(ev)

    api.routes[("GET", "/v1/events")] = streaming(stream, "text/event-stream")
    lines: list[dict[str, Any]] = []

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            lines.append(json.loads(text))
            if len(lines) == len(evs):
                raise KeyboardInterrupt
            return len(text)

    code, err = run_with_out(api, Out(), "events", "-f", "--json", "--index", "2",
                             "--type", "job_registered", "--type", "node_ready,node_drain")
    assert (code, err) == (0, "")
    assert lines == evs
    first, second = api.seen
    assert first.query == {"index": "2", "follow": "true",
                           "type": "job_registered,node_ready,node_drain"}
    assert first.headers["Last-Event-ID"] == "2"
    assert first.headers["Accept"] == "text/event-stream"
    assert first.request.read_timeout_s == 35.0
    assert second.headers["Last-Event-ID"] == "4.1"
    assert second.query["index"] == "4"
    # The reconnect went to the other address.
    assert (first.addr, second.addr) == (api.urls[0], api.urls[1])


def test_events_follow_prints_lines_and_reports_truncation(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    def stream(seen: Seen) -> Iterator[bytes]:
        yield b'event: truncated\ndata: {"oldest_index": 50}\n\n'
        yield sse(event(50, "node_ready", node="n2"))

    api.routes[("GET", "/v1/events")] = streaming(stream, "text/event-stream")

    class Out(io.StringIO):
        def write(self, text: str) -> int:
            super().write(text)
            raise KeyboardInterrupt

    out = Out()
    code, err = run_with_out(api, out, "events", "--follow")
    assert (code, err) == (0, "")
    assert out.getvalue() == "2023-11-14T22:14:10Z  50  node_ready  node=n2\n"
    assert "events before index 50 are no longer kept" in capsys.readouterr().err
    assert "Last-Event-ID" not in api.last.headers
    assert api.last.query == {"follow": "true"}


def test_events_follow_backs_off_from_a_server_that_keeps_hanging_up(api: FakeApi) -> None:
    waits: list[float] = []
    api.routes[("GET", "/v1/events")] = streaming(lambda seen: iter([b": hi\n\n"]))
    args = build_parser().parse_args(["events", "-f"])
    client = Client(api.urls, token="t", sleep=waits.append, transport=api.transport)
    with pytest.raises(ClientError, match="the event stream keeps closing"):
        args.handler(args, client, io.StringIO())
    assert len(api.seen) == 9
    assert [s.addr for s in api.seen[:3]] == [api.urls[0], api.urls[1], api.urls[0]]
    assert waits == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0]


def test_events_follow_gives_up_when_nobody_answers(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.reply("GET", "/v1/events", {"error": {"code": "forbidden", "message": "no"}},
              status=403)
    assert run(api, "events", "-f") == 1
    assert capsys.readouterr().err == "error: no\n"


# --- agent flags --------------------------------------------------------------------------------

AGENT = ["agent", "--name", "n1", "--data-dir", "/tmp/x", "--controllers", "http://c:1",
         "--token-file", "/tmp/t"]


def test_agent_labels_and_bind() -> None:
    args = build_parser().parse_args(
        [*AGENT, "--label", "zone=eu-1", "--label", "note=a=b", "--label", "empty="])
    assert args.label == [("zone", "eu-1"), ("note", "a=b"), ("empty", "")]
    assert args.bind == "127.0.0.1"
    assert args.port == 0 and args.cpu is None
    args = build_parser().parse_args([*AGENT, "--bind", "0.0.0.0"])
    assert args.label == [] and args.bind == "0.0.0.0"
    assert build_parser().parse_args([*AGENT, "--bind", "::"]).bind == "::"
    assert build_parser().parse_args([*AGENT, "--bind", "[::1]"]).bind == "::1"


@pytest.mark.parametrize("bad", [["--label", "zone"], ["--label", "=x"],
                                 ["--label", "my zone=x"], ["--bind", "1.2.3.4:80"],
                                 ["--bind", ""]])
def test_agent_bad_label_or_bind_is_a_usage_error(
    bad: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*AGENT, *bad]) == 2
    assert "expected" in capsys.readouterr().err
