"""Table rendering, and what the command line sends and prints end to end.

The command tests run the real client over an in-memory API behind its transport seam
(tests/unit/cli_fake.py); test_cli_transport.py runs the real transport against sockets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hacontrol.cli import output
from hacontrol.cli.client import Client, ClientError, RetryPolicy
from hacontrol.cli.main import main
from hacontrol.cli.transport import Response

from .cli_fake import FakeApi, Seen

# --- tables --------------------------------------------------------------------


def test_format_table_aligns_columns_without_trailing_space() -> None:
    text = output.format_table(["NAME", "COUNT", "NOTE"], [["web", 2, None], ["database", 10, ""]])
    assert text.splitlines() == [
        "NAME      COUNT  NOTE",
        "web       2      -",
        "database  10",
    ]


def test_format_table_headers_only_and_bad_rows() -> None:
    assert output.format_table(["A", "BB"], []) == "A  BB"
    with pytest.raises(ValueError):
        output.format_table(["A", "B"], [["only one"]])


def test_cell_text_values() -> None:
    assert output.cell_text(None) == "-"
    assert output.cell_text(True) == "yes"
    assert output.cell_text(2.0) == "2"
    assert output.cell_text(0.1 + 0.2) == "0.3"
    assert output.cell_text(["a", "b"]) == "a,b"
    assert output.cell_text("two\nlines") == "two\\nlines"


def test_format_kv_aligns_labels() -> None:
    assert output.format_kv([("ID", "c1"), ("Leader", None)]) == "ID      c1\nLeader  -"


@pytest.mark.parametrize(
    ("delta", "text"),
    [(5, "5s ago"), (125, "2m05s ago"), (3 * 3600 + 120, "3h02m ago"),
     (2 * 86400 + 3600, "2d01h ago"), (-3, "3s ahead")],
)
def test_format_age(delta: float, text: str) -> None:
    assert output.format_age(1000.0, now=1000.0 + delta) == text


def test_format_age_passthrough() -> None:
    assert output.format_age(None) == "-"
    assert output.format_age("2024-01-01T00:00:00Z") == "2024-01-01T00:00:00Z"


def test_used_of() -> None:
    assert output.used_of(1.5, None) == "1.5/unlimited"
    assert output.used_of(3, 10) == "3/10"


ALLOCS = [
    {"id": "web-000001", "job": "web", "namespace": "default", "node": "n1",
     "state": "running", "desired": "run", "pid": 4242, "restarts": 0, "exit_code": None,
     "signal": None, "created_at": 90.0, "updated_at": 95.0},
    {"id": "web-000002", "job": "web", "namespace": "default", "node": None,
     "state": "failed", "desired": "run", "pid": None, "restarts": 3, "exit_code": None,
     "signal": "SIGKILL", "created_at": 90.0, "updated_at": 40.0},
]


def test_render_alloc_list() -> None:
    lines = output.render_alloc_list(ALLOCS, now=100.0).splitlines()
    assert lines[0].split() == ["ID", "NAMESPACE", "JOB", "NODE", "STATE", "DESIRED", "PID",
                                "RESTARTS", "EXIT", "UPDATED"]
    assert lines[1].split() == ["web-000001", "default", "web", "n1", "running", "run", "4242",
                                "0", "-", "5s", "ago"]
    assert "signal SIGKILL" in lines[2]
    assert "1m00s ago" in lines[2]
    assert output.render_alloc_list([]) == "No allocations."


def test_render_job_shows_spec_counts_and_allocations() -> None:
    job = {"namespace": "default", "name": "web", "version": 3, "status": "running",
           "command": ["sh", "-c", "echo hi there"], "count": 2,
           "resources": {"cpu": 0.5, "memory_mb": 64}, "restart": {"policy": "always"},
           "counts": {"desired": 2, "running": 1, "pending": 1, "failed": 0}}
    text = output.render_job(job, ALLOCS, now=100.0)
    assert "Command      sh -c 'echo hi there'" in text
    assert "Resources    cpu=0.5 memory_mb=64" in text
    assert "desired=2 running=1 pending=1 failed=0" in text
    assert "web-000001" in text
    queued = output.render_job({**job, "counts": {**job["counts"], "queued": 1}}, ALLOCS)
    assert "desired=2 running=1 pending=1 queued=1 failed=0" in queued
    assert "NAMESPACE" not in text


def test_render_job_list() -> None:
    jobs = [{"namespace": "default", "name": "web", "version": 1, "count": 2,
             "status": "running", "counts": {"desired": 2, "running": 2, "pending": 0,
                                             "failed": 0}}]
    assert output.render_job_list(jobs).splitlines() == [
        "NAMESPACE  NAME  VERSION  STATUS   DESIRED  RUNNING  PENDING  FAILED",
        "default    web   1        running  2        2        0        0",
    ]
    assert output.render_job_list([]) == "No jobs."


def test_render_status_marks_leader() -> None:
    status = {"id": "c1", "role": "follower", "leader": "c2", "leader_api": "http://h:2",
              "term": 4, "commit_index": 10, "applied_index": 9, "pid": 1,
              "members": [{"id": "c1", "raft": "h:71", "api": "http://h:1"},
                          {"id": "c2", "raft": "h:72", "api": "http://h:2"}]}
    text = output.render_status(status)
    assert "Leader         c2 (http://h:2)" in text
    assert text.splitlines()[-1].split() == ["c2", "h:72", "http://h:2", "*"]
    assert "Leader         none" in output.render_status({"id": "c1", "members": []})


def test_render_nodes_and_namespaces() -> None:
    nodes = [{"name": "n1", "status": "ready", "capacity": {"cpu": 4.0, "memory_mb": 1024},
              "free": {"cpu": 3.5, "memory_mb": 512}, "last_heartbeat": 98.0}]
    assert output.render_node_list(nodes, now=100.0).splitlines()[1].split() == [
        "n1", "ready", "3.5/4", "512/1024", "2s", "ago"]
    namespaces = [{"name": "default", "quota": {"cpu": 2.0, "memory_mb": None, "processes": 5},
                   "usage": {"cpu": 0.5, "memory_mb": 64, "processes": 1}}]
    assert output.render_namespace_list(namespaces).splitlines()[1].split() == [
        "default", "0.5/2", "64/unlimited", "1/5"]
    text = output.render_namespace(namespaces[0])
    assert "memory_mb  64    unlimited" in text


# --- commands over the in-memory API ----------------------------------------------


@pytest.fixture
def api() -> FakeApi:
    return FakeApi()


def run(api: FakeApi, *argv: str) -> int:
    return api.run(*argv)


def client_for(api: FakeApi, addrs: list[str] | None = None,
               retry: RetryPolicy | None = None,
               sleep: Callable[[float], None] | None = None) -> Client:
    return Client(addrs or [api.url], token="t", retry=retry or RetryPolicy(),
                  sleep=sleep or fail_on_sleep, transport=api.transport)


def sent(api: FakeApi) -> list[Seen]:
    """The requests sent, without the client's questions for the members (/v1/status),
    which it asks after a failure (tests/unit/test_cli_members.py)."""
    return [s for s in api.seen if s.path != "/v1/status"]


def no_members(api: FakeApi) -> None:
    """Answer the client's questions for the members with none (nothing learned), so
    they do not take the scripted replies."""
    api.reply("GET", "/v1/status", {"members": []})


def fail_on_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected wait of {seconds}s")


def test_job_scale_sends_post_with_count_and_key(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.replies.append((200, {"index": 7}, {}))
    assert run(api, "job", "scale", "web", "3") == 0
    req = api.last
    assert (req.method, req.path, req.body) == ("POST", "/v1/jobs/default/web/scale", {"count": 3})
    assert req.headers["Authorization"] == "Bearer sekrit"
    assert req.headers["Content-Type"] == "application/json"
    uuid.UUID(req.headers["Idempotency-Key"])
    assert capsys.readouterr().out == "Job default/web scaled to 3 (index 7)\n"


def test_reads_send_no_idempotency_key(api: FakeApi) -> None:
    api.replies.append((200, {"nodes": []}, {}))
    assert run(api, "node", "list") == 0
    assert api.last.method == "GET" and api.last.path == "/v1/nodes"
    assert "Idempotency-Key" not in api.last.headers
    assert api.last.request.body is None


def test_job_run_uses_file_names_and_flag_overrides(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text("name: web\nnamespace: team-a\ncommand: [sleep, '60']\ncount: 2\n")
    api.default = lambda s: (200, {"job": {**s.body, "version": 4}, "index": 12}, {})

    assert run(api, "job", "run", str(spec), "--detach") == 0
    assert api.last.method == "PUT" and api.last.path == "/v1/jobs/team-a/web"
    assert api.last.body == {"name": "web", "namespace": "team-a",
                             "command": ["sleep", "60"], "count": 2}
    assert capsys.readouterr().out == "Job team-a/web registered: version 4, index 12\n"

    assert run(api, "job", "run", str(spec), "--namespace", "prod", "--name", "api",
               "--detach") == 0
    assert api.last.path == "/v1/jobs/prod/api"
    assert api.last.body["name"] == "api" and api.last.body["namespace"] == "prod"


def test_job_run_defaults_namespace_and_requires_a_name(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "job.toml"
    spec.write_text('command = ["true"]\n')
    assert run(api, "job", "run", str(spec)) == 2
    assert "--name" in capsys.readouterr().err
    assert api.seen == []
    api.replies.append((200, {"job": {"version": 1}, "index": 2}, {}))
    assert run(api, "job", "run", str(spec), "--name", "once", "--detach") == 0
    assert api.last.path == "/v1/jobs/default/once"
    assert api.last.body == {"command": ["true"], "name": "once"}


def test_job_run_bad_file_reports_file_and_line(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "bad.json"
    spec.write_text('{"name": "web",\n "count": }\n')
    assert run(api, "job", "run", str(spec)) == 1
    assert capsys.readouterr().err.startswith(f"error: {spec}:2:")
    assert api.seen == []


def test_api_error_prints_message_and_field(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.replies.append((422, {"error": {"code": "invalid", "message": "must be an integer",
                                        "field": "count"}}, {}))
    assert run(api, "job", "scale", "web", "2") == 1
    assert capsys.readouterr().err == "error: must be an integer (field: count)\n"

    api.replies.append((409, {"error": {"code": "quota_exceeded", "message": "over quota"}}, {}))
    assert run(api, "job", "scale", "web", "2") == 1
    assert capsys.readouterr().err == "error: over quota\n"


def test_error_answer_that_is_not_json(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.routes[("GET", "/v1/nodes")] = lambda seen: Response(500, {}, b"<h1>oops</h1>")
    assert run(api, "node", "list") == 1
    assert capsys.readouterr().err == "error: HTTP 500: <h1>oops</h1>\n"
    api.routes[("GET", "/v1/nodes")] = lambda seen: Response(200, {}, b"not json")
    assert run(api, "node", "list") == 1
    assert capsys.readouterr().err == "error: server answered with invalid JSON\n"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["job", "scale", "web"]) == 2
    assert main(["job", "scale", "web", "many"]) == 2
    assert main(["namespace", "set-quota", "ns", "--cpu", "-1"]) == 2
    assert main(["server", "--id", "c1"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_write_retried_with_same_key_after_unknown_outcome(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = {"error": {"code": "unavailable", "message": "leader lost", "outcome": "unknown"}}
    no_members(api)
    api.replies += [(503, unknown, {"Retry-After": "0"}), (503, unknown, {"Retry-After": "0"}),
                    (200, {"index": 9}, {})]
    assert run(api, "job", "stop", "web") == 0
    assert [s.method for s in sent(api)] == ["DELETE"] * 3
    keys = {s.headers["Idempotency-Key"] for s in sent(api)}
    assert len(keys) == 1
    assert capsys.readouterr().out == "Job default/web stopped (index 9)\n"

    # A fresh command is a fresh write, with its own key.
    assert run(api, "job", "stop", "web") == 0
    assert api.last.headers["Idempotency-Key"] not in keys


def test_retries_are_bounded(api: FakeApi) -> None:
    unknown = {"error": {"code": "unavailable", "message": "no leader", "outcome": "unknown"}}
    api.default = lambda s: (503, unknown, {"Retry-After": "0"})
    client = client_for(api, retry=RetryPolicy(attempts=4), sleep=lambda s: None)
    with pytest.raises(ClientError) as info:
        client.post("/v1/jobs/default/web/scale", {"count": 1})
    assert info.value.status == 503
    assert str(info.value) == "no leader (outcome unknown)"
    assert len(sent(api)) == 4
    assert len({s.headers["Idempotency-Key"] for s in sent(api)}) == 1


def test_retry_after_is_honoured(api: FakeApi) -> None:
    waits: list[float] = []
    api.replies += [(503, {"error": {"code": "not_leader", "message": "no leader"}},
                     {"Retry-After": "2"}), (200, {}, {})]
    client = client_for(api, sleep=waits.append)
    client.put("/v1/namespaces/x", {"quota": {}})
    assert waits == [2.0]


def test_backoff_without_retry_after_is_exponential_and_capped(api: FakeApi) -> None:
    waits: list[float] = []
    api.default = lambda s: (502, {}, {})
    client = client_for(api, retry=RetryPolicy(attempts=6, deadline_s=1000),
                        sleep=waits.append)
    with pytest.raises(ClientError):
        client.post("/v1/x", {})
    assert waits == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_fails_over_to_next_address(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.down.add(api.urls[0])
    api.replies.append((200, {"id": "c2", "role": "leader", "leader": "c2", "members": []}, {}))
    addrs = ",".join(api.urls)
    assert api.main("status", "--json", "--addr", addrs, "--token", "t") == 0
    assert json.loads(capsys.readouterr().out)["id"] == "c2"
    assert api.last.addr == api.urls[1]


def test_unavailable_replica_moves_to_the_next_address(api: FakeApi) -> None:
    # A replica answering 503 may be cut off from the leader: the retry goes elsewhere,
    # and so does the next request.
    no_members(api)
    api.replies += [(503, {"error": {"code": "not_leader", "message": "no"}},
                     {"Retry-After": "0"}), (200, {}, {}), (200, {}, {})]
    client = client_for(api, api.urls, sleep=lambda s: None)
    client.post("/v1/x", {})
    client.get("/v1/y")
    assert [s.addr for s in sent(api)] == [api.urls[0], api.urls[1], api.urls[1]]


def test_write_after_connection_failure_keeps_key(api: FakeApi) -> None:
    api.down.add(api.urls[0])
    api.replies.append((200, {}, {}))
    client = client_for(api, api.urls, sleep=lambda s: None)
    client.request("PUT", "/v1/namespaces/a", body={"quota": {}}, idempotency_key="k-1")
    assert sent(api)[-1].headers["Idempotency-Key"] == "k-1"
    assert sent(api)[-1].addr == api.urls[1]


def test_write_keeps_key_while_every_replica_is_down_for_a_while(api: FakeApi) -> None:
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        if len(waits) == 2:
            api.down.clear()

    api.down.update(api.urls)
    client = client_for(api, api.urls, sleep=sleep)
    client.request("POST", "/v1/x", body={}, idempotency_key="k-3")
    assert waits == [0.25, 0.5]
    assert [s.headers["Idempotency-Key"] for s in sent(api)] == ["k-3"]


def test_nobody_answering_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.down.update(api.urls)
    assert api.main("node", "list", "--addr", api.url, "--token", "t") == 1
    assert capsys.readouterr().err.startswith("error: no replica answered")


def test_redirect_keeps_method_body_and_key(api: FakeApi) -> None:
    api.replies += [(307, {}, {"Location": "/v1/elsewhere"}), (200, {"ok": True}, {})]
    client = client_for(api)
    assert client.request("PUT", "/v1/jobs/default/web", body={"command": ["x"]},
                          idempotency_key="k-2") == {"ok": True}
    first, second = api.seen
    assert second.method == "PUT" and second.path == "/v1/elsewhere"
    assert second.body == {"command": ["x"]}
    assert second.headers["Idempotency-Key"] == "k-2"


def test_redirect_follows_the_leader_to_another_address(api: FakeApi) -> None:
    leader = api.urls[1]
    api.replies += [(307, {}, {"Location": leader + "/v1/jobs/default/web"}),
                    (200, {"index": 3}, {})]
    client = client_for(api, addrs=api.urls)
    assert client.post("/v1/jobs/default/web", {"count": 1}) == {"index": 3}
    assert [s.addr for s in api.seen] == [api.url, leader]
    assert api.seen[0].headers["Idempotency-Key"] == api.seen[1].headers["Idempotency-Key"]


def test_redirect_loop_is_an_error(api: FakeApi) -> None:
    api.default = lambda s: (308, {}, {"Location": "/v1/again"})
    client = client_for(api, retry=RetryPolicy(attempts=1))
    with pytest.raises(ClientError) as info:
        client.get("/v1/x")
    assert "too many redirects" in str(info.value)
    assert len(sent(api)) == 4


def test_env_and_token_file(
    api: FakeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    api.default = lambda s: (200, {"namespaces": []}, {})
    api.down.add(api.urls[0])
    monkeypatch.setenv("HACONTROL_ADDR", f"{api.urls[0]}, {api.urls[1]}")
    monkeypatch.setenv("HACONTROL_TOKEN", "from-env")
    assert api.main("namespace", "list") == 0
    assert api.last.headers["Authorization"] == "Bearer from-env"
    assert api.last.addr == api.urls[1]
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert api.main("--token-file", str(token_file), "namespace", "list") == 0
    assert api.last.headers["Authorization"] == "Bearer from-file"
    assert api.main("namespace", "list", "--token-file", str(tmp_path / "missing")) == 2
    assert "cannot read token file" in capsys.readouterr().err


def test_unauthorized_without_token_hints(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.replies.append((401, {"error": {"code": "unauthorized", "message": "missing token"}}, {}))
    assert api.main("node", "list", "--addr", api.url) == 1
    assert "HACONTROL_TOKEN" in capsys.readouterr().err
    assert "Authorization" not in api.last.headers


def test_job_status_one_job_includes_allocations(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    job = {"namespace": "ops", "name": "web", "version": 2, "status": "running",
           "command": ["sleep", "1"], "count": 1, "counts": {"desired": 1, "running": 1}}
    api.replies += [(200, {"job": job}, {}), (200, {"allocations": ALLOCS[:1]}, {})]
    assert run(api, "job", "status", "web", "-n", "ops", "--json") == 0
    job_req, alloc_req = api.seen
    assert job_req.path == "/v1/jobs/ops/web"
    assert (alloc_req.path, alloc_req.query) == ("/v1/allocations", {"namespace": "ops", "job": "web"})
    assert json.loads(capsys.readouterr().out) == {"job": job, "allocations": ALLOCS[:1]}


def test_job_status_list_and_alloc_filters(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.replies += [(200, {"jobs": []}, {}), (200, {"allocations": []}, {}),
                    (200, {"allocations": []}, {})]
    assert run(api, "job", "status") == 0
    assert (api.last.path, api.last.query) == ("/v1/jobs", {})
    assert run(api, "alloc", "list", "--node", "n1") == 0
    assert (api.last.path, api.last.query) == ("/v1/allocations", {"node": "n1"})
    assert capsys.readouterr().out == "No jobs.\nNo allocations.\n"
    # The full word works too.
    assert run(api, "allocation", "list", "--job", "web") == 0
    assert (api.last.path, api.last.query) == ("/v1/allocations", {"job": "web"})


def test_set_quota_sends_nulls_for_unlimited(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.default = lambda s: (200, {"name": "ns1", "quota": s.body["quota"],
                                   "usage": {"cpu": 0, "memory_mb": 0, "processes": 0}}, {})
    assert run(api, "namespace", "set-quota", "ns1", "--cpu", "2.5", "--processes", "4") == 0
    assert api.last.method == "PUT" and api.last.path == "/v1/namespaces/ns1"
    assert api.last.body == {"quota": {"cpu": 2.5, "memory_mb": None, "processes": 4}}
    assert "memory_mb  0     unlimited" in capsys.readouterr().out


def test_names_are_escaped_in_paths(api: FakeApi) -> None:
    assert run(api, "job", "stop", "a/b", "--namespace", "x?y") == 0
    assert api.last.raw_path == "/v1/jobs/x%3Fy/a%2Fb"
    assert api.last.query == {}


def test_render_status_shows_protocols_during_an_upgrade() -> None:
    status = {"id": "c1", "leader": "c1", "protocol": 2, "ops_waiting": ["x_new"],
              "member_protocols": {"c1": 2, "c2": 1},
              "members": [{"id": "c1", "raft": "r1", "api": "a1"},
                          {"id": "c2", "raft": "r2", "api": "a2"}]}
    text = output.render_status(status)
    assert "Protocol" in text and "x_new" in text and "PROTOCOL" in text
    assert [line.split()[-1] for line in text.splitlines()[-2:]] == ["2", "1"]
    # A replica of protocol 1 answers without them: nothing is shown.
    old = output.render_status({"id": "c2", "members": [{"id": "c1", "raft": "r", "api": "a"}]})
    assert "rotocol" not in old and "PROTOCOL" not in old
