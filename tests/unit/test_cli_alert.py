"""``hacontrol alert`` and the health score in ``hacontrol status``, over the fake API."""

from __future__ import annotations

from typing import Any

import pytest

from .cli_fake import FakeApi, not_found


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(default=not_found)


def run(api: FakeApi, *argv: str) -> int:
    return api.run(*argv)


def test_alert_apply_list_show_delete(api: FakeApi, capsys: pytest.CaptureFixture[str],
                                      tmp_path: Any) -> None:
    rule = tmp_path / "down.yaml"
    rule.write_text("name: down\nwhen: node_down\nseverity: critical\nsinks:\n"
                    "  - {type: webhook, url: 'http://hooks.example/x', secret: s}\n")
    api.reply("PUT", "/v1/alerts/down", {"alert": {"name": "down"}, "index": 9})
    assert run(api, "alert", "apply", str(rule)) == 0
    assert api.last.body == {"name": "down", "when": "node_down", "severity": "critical",
                             "sinks": [{"type": "webhook", "url": "http://hooks.example/x",
                                        "secret": "s"}]}
    assert "Alert 'down' applied (index 9)" in capsys.readouterr().out
    api.reply("GET", "/v1/alerts", {"alerts": [
        {"name": "down", "when": "node_down", "severity": "critical", "status": "firing",
         "since": 1.0, "sinks": 1, "pending": 1}]})
    assert run(api, "alert", "list") == 0
    out = capsys.readouterr().out
    assert "down" in out and "firing" in out and "PENDING" in out
    api.reply("GET", "/v1/alerts/down", {"name": "down", "rule": {
        "when": "node_down", "severity": "critical", "threshold": 1, "window_s": 300,
        "sinks": [{"type": "webhook", "url": "http://hooks.example/x", "secret_set": True},
                  {"type": "exec", "command": ["page", "me"]}]},
        "state": {"status": "firing", "since": 1.0, "details": {"nodes": ["n1"]},
                  "notifications": [{"id": "down-1", "status": "firing", "deliveries": [
                      {"sink": 0, "status": "pending", "attempts": 2,
                       "last_error": "HTTP 500"},
                      {"sink": 1, "status": "delivered", "attempts": 1}]}]}})
    assert run(api, "alert", "show", "down") == 0
    out = capsys.readouterr().out
    assert "webhook http://hooks.example/x (signed)" in out and "exec page me" in out
    assert "down-1" in out and "HTTP 500" in out and "delivered" in out
    api.reply("DELETE", "/v1/alerts/down", {"deleted": "down", "index": 10})
    assert run(api, "alert", "delete", "down") == 0
    assert "Alert 'down' deleted (index 10)" in capsys.readouterr().out


def test_alert_apply_needs_a_name(api: FakeApi, capsys: pytest.CaptureFixture[str],
                                  tmp_path: Any) -> None:
    rule = tmp_path / "r.json"
    rule.write_text('{"when": "node_down"}')
    assert run(api, "alert", "apply", str(rule)) != 0
    assert "needs a name" in capsys.readouterr().err
    api.reply("PUT", "/v1/alerts/x", {"alert": {"name": "x"}, "index": 1})
    assert run(api, "alert", "apply", str(rule), "--name", "x") == 0


def test_status_shows_the_health_score_and_its_reasons(
        api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/status", {"id": "c1", "role": "leader", "leader": "c1",
                                    "members": []})
    api.reply("GET", "/v1/health/score", {"score": 88, "reasons": [
        {"reason": "node_down", "penalty": 10, "count": 1, "items": ["n2"]},
        {"reason": "node_draining", "penalty": 2, "count": 1, "items": ["n3"]}]})
    assert run(api, "status") == 0
    out = capsys.readouterr().out
    assert "Health score: 88 / 100" in out
    assert "-10  node_down (1: n2)" in out and "-2  node_draining (1: n3)" in out
    # Without operator:read the status shows as before.
    api.reply("GET", "/v1/health/score", {"error": {"code": "forbidden", "message": "no"}},
              status=403)
    assert run(api, "status") == 0
    assert "Health score" not in capsys.readouterr().out
