"""`hacontrol job plan`, `job run --check-index`, and `job run` following its deployment,
over the client's transport seam (no cluster)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from hacontrol.cli.client import Client, ClientError, RetryPolicy
from hacontrol.cli.watch import Verdict, judge, progress_of, watch

from .cli_fake import FakeApi, Seen, json_response

PLAN = {
    "job_modify_index": 7,
    "diff": [{"field": "count", "type": "edited", "old": 1, "new": 3},
             {"field": "env.NEW", "type": "added", "old": None, "new": "x"},
             {"field": "cwd", "type": "deleted", "old": "/srv", "new": None}],
    "changes": {"create": 1, "replace": 0, "stop": 0, "ignore": 1, "pending": 1},
    "placements": [
        {"action": "ignore", "allocation": "web-000001", "node": "n1", "reason": "unchanged"},
        {"action": "create", "allocation": None, "node": "n2", "reason": "count 1 -> 3"},
        {"action": "pending", "allocation": None, "node": None,
         "reason": "no node has 1.0 cpu and 64 MB free"}],
    "quota": {"ok": False, "reason": "cpu 3 would exceed the namespace quota of 2"},
}


def alloc(i: int, state: str, version: int = 2, **kw: Any) -> dict[str, Any]:
    return {"id": f"web-{i}", "version": version, "desired": "run", "state": state,
            "node": None if state == "pending" else "n1", "health": None, **kw}


def job(*allocs: dict[str, Any], version: int = 2, count: int = 2,
        deployment: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"job": {"name": "web", "version": version, "count": count, "status": "running",
                    "deployment": deployment, "allocations": list(allocs), **kw}}


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    f = tmp_path / "web.yaml"
    f.write_text("name: web\ncommand: [sleep, '60']\ncount: 3\n")
    return f


def test_plan_shows_the_diff_the_dry_run_and_the_index(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("POST", "/v1/jobs/default/web/plan", PLAN)
    assert api.run("job", "plan", str(spec)) == 1  # changes, as nomad job plan exits
    assert api.last.body["count"] == 3
    out = capsys.readouterr().out
    assert '~ Job: "default/web"' in out
    for line in ("  ~ count: 1 => 3", '  + env.NEW: "x"', '  - cwd: "/srv"',
                 "Scheduler dry run: 1 create, 0 replace, 0 stop, 1 ignore, 1 pending",
                 "  create on n2: count 1 -> 3",
                 "  pending: no node has 1.0 cpu and 64 MB free",
                 "Quota: exceeded: cpu 3 would exceed the namespace quota of 2",
                 "Job Modify Index: 7", f"  hacontrol job run --check-index 7 {spec}"):
        assert line in out.splitlines(), (line, out)
    assert "web-000001" not in out  # what stays as it is is not listed


def test_plan_json_and_no_changes(spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    same = {**PLAN, "diff": [], "changes": dict.fromkeys(PLAN["changes"], 0)}  # type: ignore
    api.reply("POST", "/v1/jobs/default/web/plan", same)
    assert api.run("job", "plan", str(spec), "--json") == 0
    assert '"job_modify_index": 7' in capsys.readouterr().out


def test_plan_errors_exit_255_since_1_means_changes(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.routes[("POST", "/v1/jobs/default/web/plan")] = lambda s: json_response(422, {
        "error": {"code": "invalid", "field": "count", "message": "must be an integer"}})
    assert api.run("job", "plan", str(spec)) == 255
    assert "must be an integer" in capsys.readouterr().err


def test_run_with_check_index_sends_it_and_a_409_names_the_field(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.routes[("PUT", "/v1/jobs/default/web")] = lambda s: json_response(409, {"error": {
        "code": "conflict", "field": "check_index",
        "message": "job default/web changed since the plan: its modify index is 9, not 7"}})
    assert api.run("job", "run", str(spec), "--check-index", "7") == 1
    assert api.last.query == {"check_index": "7"}
    assert "changed since the plan" in capsys.readouterr().err


def test_run_waits_until_the_deployment_is_healthy(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("PUT", "/v1/jobs/default/web", {"job": {"name": "web", "version": 2}, "index": 5})
    api.reply("GET", "/v1/jobs/default/web",
              job(alloc(1, "running"), alloc(2, "running", health="healthy"),
                  alloc(3, "running", version=1)))
    assert api.run("job", "run", str(spec)) == 0
    out = capsys.readouterr().out
    assert "version 2: placed 2/2, running 2, healthy 2, failed 0" in out
    assert "Deployment of version 2 succeeded: 2 of 2 allocations running and healthy" in out


def test_run_exits_non_zero_with_the_reason_when_an_allocation_fails(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("PUT", "/v1/jobs/default/web", {"job": {"name": "web", "version": 2}, "index": 5})
    failed = alloc(2, "failed", exit_code=3,
                   message="exited with code 3; restart policy is never")
    api.reply("GET", "/v1/jobs/default/web", job(alloc(1, "running"), failed))
    assert api.run("job", "run", str(spec)) == 1
    err = capsys.readouterr().err
    assert ("deployment of version 2 failed: allocation web-2 failed: exited with code 3; "
            "restart policy is never, exit code 3") in err


def test_run_detach_and_json_do_not_print_progress(
        spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("PUT", "/v1/jobs/default/web", {"job": {"name": "web", "version": 2}, "index": 5})
    assert api.run("job", "run", str(spec), "--detach") == 0
    assert [s.method for s in api.seen] == ["PUT"]
    api.reply("GET", "/v1/jobs/default/web", job(alloc(1, "running"), alloc(2, "running")))
    capsys.readouterr()
    assert api.run("job", "run", str(spec), "--json") == 0
    out = capsys.readouterr().out
    assert out.startswith("{") and "placed" not in out


# ------------------------------------------------------------------ the judge

def test_judge_follows_a_rolling_update_to_its_end() -> None:
    rolling = {"version": 2, "status": "running", "message": ""}
    assert judge(job(alloc(1, "running"), alloc(2, "running"), deployment=rolling)["job"],
                 2) is None
    failed = {"version": 2, "status": "failed", "message": "deadline passed with 1/2 healthy"}
    assert judge(job(deployment=failed)["job"], 2) == Verdict(
        False, "deployment failed: deadline passed with 1/2 healthy")
    moved = judge(job(version=3)["job"], 2)
    assert moved is not None and not moved.ok and "version 3" in moved.message
    assert judge(job(alloc(1, "pending"), alloc(2, "running"))["job"], 2) is None
    batch = judge(job(alloc(1, "complete"), alloc(2, "complete"))["job"], 2)
    assert batch == Verdict(True, "2 of 2 allocations complete")


def test_progress_counts_only_the_submitted_version() -> None:
    p = progress_of(job(alloc(1, "running", health="starting"), alloc(2, "pending",
                                                                      pending_reason="full"),
                        alloc(3, "running", version=1), alloc(4, "lost"))["job"], 2)
    assert p.line() == ("version 2: placed 2/2, running 1, healthy 0, failed 1 "
                        "(pending: full)")


def test_watch_redraws_on_a_terminal_and_gives_up_at_the_deadline() -> None:
    answers = [job(alloc(1, "pending"), alloc(2, "pending")),
               job(alloc(1, "running"), alloc(2, "pending"))]
    now = [0.0]

    def reply(seen: Seen) -> Any:
        return json_response(200, answers.pop(0) if len(answers) > 1 else answers[0])
    api = FakeApi()
    api.routes[("GET", "/v1/jobs/default/web")] = reply

    def sleep(s: float) -> None:
        now[0] += s
    client = Client([api.url], transport=api.transport, sleep=sleep,
                    retry=RetryPolicy(attempts=1))
    out, err = io.StringIO(), io.StringIO()
    code = watch(client, "/v1/jobs/default/web", 2, out, err, tty=True, timeout_s=3.0,
                 clock=lambda: now[0])
    assert code == 1
    assert out.getvalue().count("\r\x1b[K") == 2  # one redraw per change, not per poll
    assert "timed out after 3s; version 2: placed 1/2, running 1" in err.getvalue()
    assert len([s for s in api.seen if s.method == "GET"]) == 7  # every 0.5 s for 3 s


def test_watch_waits_out_an_unavailable_cluster_but_not_a_missing_job() -> None:
    answers: list[Any] = [(503, {"error": {"code": "unavailable", "message": "no leader"}}),
                          (200, job(alloc(1, "running"), alloc(2, "running")))]
    api = FakeApi()
    api.routes[("GET", "/v1/jobs/default/web")] = lambda s: json_response(*answers.pop(0))
    client = Client([api.url], transport=api.transport, sleep=lambda s: None,
                    retry=RetryPolicy(attempts=1))
    out, err = io.StringIO(), io.StringIO()
    assert watch(client, "/v1/jobs/default/web", 2, out, err, tty=False) == 0
    assert "succeeded" in out.getvalue()
    api.routes[("GET", "/v1/jobs/default/web")] = lambda s: json_response(
        404, {"error": {"code": "not_found", "message": "job default/web not found"}})
    with pytest.raises(ClientError) as exc:
        watch(client, "/v1/jobs/default/web", 2, out, err, tty=False)
    assert exc.value.status == 404
