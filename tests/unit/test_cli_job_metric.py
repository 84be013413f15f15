"""`hacontrol job metric`: push a value (following the leader's redirect), show the
leader's view, refuse a value that is no number before anything is sent."""

from __future__ import annotations

import pytest

from .cli_fake import ADDRS, FakeApi, json_response

PUSH = "/v1/jobs/default/workers/metrics/queue_length"


def test_push_sends_the_value_and_follows_the_redirect_to_the_leader(
        capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    leader = ADDRS[1]
    api.reply("GET", "/v1/status", {"members": [{"id": f"c{i}", "raft": f"h:{i}", "api": a}
                                                for i, a in enumerate(ADDRS, 1)]})
    api.routes[("PUT", PUSH)] = lambda seen: (
        json_response(200, {"namespace": "default", "job": "workers",
                            "metric": "queue_length", "value": 120.0,
                            "stale_after_s": 60.0})
        if seen.addr == leader else
        json_response(307, {}, {"Location": leader + PUSH}))
    assert api.run("job", "metric", "workers", "queue_length", "120") == 0
    assert [(s.addr, s.body) for s in api.seen if s.path == PUSH] == [
        (ADDRS[0], {"value": 120.0}), (leader, {"value": 120.0})]
    assert capsys.readouterr().out == \
        "queue_length of default/workers = 120, counted for 60s\n"


def test_show_prints_what_the_leader_knows(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    api.reply("GET", "/v1/jobs/team/workers/metrics", {
        "namespace": "team", "job": "workers", "count": 3, "total": 31.0,
        "complete": True, "age_s": 1.5, "decision": "metric total 31 for 10 per "
        "allocation: 3 is right", "metric": {"name": "queue_length", "source": "external"}})
    assert api.run("job", "metric", "workers", "-n", "team") == 0
    out = capsys.readouterr().out
    assert "queue_length (external)" in out and "Total    31" in out
    assert "Age      1.5s" in out and "3 is right" in out


@pytest.mark.parametrize("value", ["lots", "nan", "inf"])
def test_a_value_that_is_no_number_is_refused_before_sending(value: str) -> None:
    api = FakeApi()
    assert api.run("job", "metric", "workers", "queue_length", value) != 0
    assert not [s for s in api.seen if s.method == "PUT"]
