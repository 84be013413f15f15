"""A rule read back (GET, `alert show --json`) and applied again keeps its webhook secrets,
over the real app with the real sealer: through the API, and through the real CLI talking
HTTP to a real server. `secret_set` cannot move a secret to another receiver (attacked)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hacontrol.alerts.sealing import Sealer
from hacontrol.api.alert_routes import use_sealer
from hacontrol.api.app import build_app
from hacontrol.cli.main import main
from hacontrol.raft.keys import generate_secret
from hacontrol.scheduler.leader_state import Leadership

from .api_fake import ApplyingReplica
from .test_api_errors import TOKEN

URL = "http://127.0.0.1:9/hook"
OTHER = "http://127.0.0.1:9/elsewhere"


class Server:
    """The real app over `replica`, sealing with a cluster secret, on a real port."""

    def __init__(self) -> None:
        self.replica = ApplyingReplica()
        self.sealer = Sealer(generate_secret())
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()

        async def start() -> int:
            app = build_app(self.replica, self.replica, Leadership(lambda: 3), TOKEN)
            use_sealer(app, self.sealer)
            self.runner = web.AppRunner(app, shutdown_timeout=0.1)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            return int(self.runner.addresses[0][1])
        port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def secret(self, name: str, sink: int = 0) -> str | None:
        stored = self.replica.m.store.alert_rules[name].sinks[sink].secret
        return None if stored is None else self.sealer.open(stored)

    def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        import urllib.error
        import urllib.request
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as s:
        yield s


def hooks(*sinks: dict[str, Any]) -> dict[str, Any]:
    return {"when": "node_down", "sinks": list(sinks)}


def test_a_rule_read_back_and_applied_again_keeps_its_secret(server: Server) -> None:
    rule = hooks({"type": "webhook", "url": URL, "secret": "first-secret"},
                 {"type": "exec", "command": ["true"]},
                 {"type": "webhook", "url": OTHER})
    assert server.send("PUT", "/v1/alerts/down", rule)[0] == 200
    status, got = server.send("GET", "/v1/alerts/down")
    assert status == 200 and "first-secret" not in json.dumps(got)
    assert [s.get("secret_set") for s in got["rule"]["sinks"]] == [True, None, False]
    status, out = server.send("PUT", "/v1/alerts/down", got["rule"])
    assert status == 200, out
    assert server.secret("down") == "first-secret" and server.secret("down", 2) is None
    # The sinks reordered: the secret follows its URL.
    moved = dict(got["rule"], sinks=list(reversed(got["rule"]["sinks"])))
    assert server.send("PUT", "/v1/alerts/down", moved)[0] == 200
    assert server.secret("down", 2) == "first-secret" and server.secret("down", 0) is None
    assert server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": URL, "secret": None, "secret_set": True}))[0] == 200
    assert server.secret("down") == "first-secret"  # a null secret is no secret given
    # An explicit secret replaces it; secret_set false (or neither) removes it.
    assert server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": URL, "secret": "second", "secret_set": True}))[0] == 200
    assert server.secret("down") == "second"
    assert server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": URL, "secret_set": False}))[0] == 200
    assert server.secret("down") is None


def test_secret_set_cannot_move_a_secret_or_make_one_up(server: Server) -> None:
    assert server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": URL, "secret": "first-secret"}))[0] == 200
    # To another receiver: refused, naming the field, and the rule unchanged.
    status, out = server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": OTHER, "secret_set": True}))
    assert status == 422 and out["error"]["field"] == "sinks[0].secret", out
    assert server.replica.m.store.alert_rules["down"].sinks[0].url == URL
    # Into another rule: it has no secret of its own to keep.
    status, out = server.send("PUT", "/v1/alerts/copy", hooks(
        {"type": "webhook", "url": URL, "secret_set": True}))
    assert status == 422 and out["error"]["field"] == "sinks[0].secret"
    assert "copy" not in server.replica.m.store.alert_rules
    status, out = server.send("PUT", "/v1/alerts/down", hooks(
        {"type": "webhook", "url": URL, "secret_set": "yes"}))
    assert status == 422 and out["error"]["field"] == "sinks[0].secret_set"


def test_the_cli_applies_what_alert_show_json_printed(
        server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert server.send("PUT", "/v1/alerts/down", dict(hooks(
        {"type": "webhook", "url": URL, "secret": "cli-secret"}), severity="critical"))[0] == 200
    flags = ("--addr", server.url, "--token", TOKEN)
    assert main(["alert", "show", "down", "--json", *flags]) == 0
    shown = capsys.readouterr().out
    assert "cli-secret" not in shown and json.loads(shown)["rule"]["sinks"][0]["secret_set"]
    path = tmp_path / "down.json"
    path.write_text(shown)
    assert main(["alert", "apply", str(path), *flags]) == 0
    assert "Alert 'down' applied" in capsys.readouterr().out
    rule = server.replica.m.store.alert_rules["down"]
    assert rule.severity == "critical" and server.secret("down") == "cli-secret"
    assert rule.modify_index > 0
