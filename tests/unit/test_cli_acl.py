"""``hacontrol acl ...`` and ``hacontrol node intro create`` over the in-memory API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hacontrol.cli.commands.acl import duration

from .cli_fake import FakeApi, not_found

ACCESSOR = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
TOKEN = {"accessor_id": ACCESSOR, "name": "ci", "type": "client", "policies": ["ro"],
         "create_ts": 1.0, "expires_ts": None, "node": None}


@pytest.fixture
def api() -> FakeApi:
    return FakeApi(default=not_found)


def test_bootstrap_shows_the_secret_once(api: FakeApi,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/acl/bootstrap", {"token": {**TOKEN, "type": "management",
                                                       "secret_id": "s3cret"}, "index": 4})
    assert api.main("acl", "bootstrap", "--addr", api.url) == 0
    out = capsys.readouterr().out
    assert "s3cret" in out and ACCESSOR in out and "management" in out
    assert "Authorization" not in api.last.headers  # no token needed, none sent


def test_policy_apply_reads_a_file_or_bare_rules(api: FakeApi, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("PUT", "/v1/acl/policies/ro", {"policy": {}, "index": 7})
    rules = {"namespaces": {"*": {"policy": "read"}}, "node": "read"}
    f = tmp_path / "ro.json"
    f.write_text(json.dumps(rules))
    assert api.run("acl", "policy", "apply", "ro", str(f), "--description", "readers") == 0
    assert api.last.body == {"rules": rules, "description": "readers"}
    assert "Policy 'ro' applied (index 7)" in capsys.readouterr().out
    f.write_text(json.dumps({"description": "d", "rules": rules}))
    assert api.run("acl", "policy", "apply", "ro", str(f)) == 0
    assert api.last.body == {"description": "d", "rules": rules}
    f.write_text("[1]")
    assert api.run("acl", "policy", "apply", "ro", str(f)) == 2
    assert api.run("acl", "policy", "apply", "ro", str(tmp_path / "missing")) == 2


def test_policy_list_and_delete(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/acl/policies", {"policies": [
        {"name": "ro", "description": "", "rules": {"namespaces": {}}}]})
    assert api.run("acl", "policy", "list") == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "DESCRIPTION", "RULES"] and "ro" in out
    api.reply("DELETE", "/v1/acl/policies/ro", {"policy": {}, "index": 9})
    assert api.run("acl", "policy", "delete", "ro") == 0
    assert "deleted (index 9)" in capsys.readouterr().out


def test_token_create_list_self_revoke(api: FakeApi,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/acl/tokens", {"token": {**TOKEN, "secret_id": "abc"}, "index": 3})
    assert api.run("acl", "token", "create", "--name", "ci", "--policy", "ro",
                   "--ttl", "10m") == 0
    assert api.last.body == {"name": "ci", "type": "client", "policies": ["ro"],
                             "ttl_s": 600.0}
    assert api.last.headers["Authorization"] == "Bearer sekrit"
    assert "abc" in capsys.readouterr().out
    assert api.run("acl", "token", "create") == 2  # a client token needs a policy
    assert "--policy" in capsys.readouterr().err
    api.reply("GET", "/v1/acl/tokens", {"tokens": [TOKEN]})
    assert api.run("acl", "token", "list") == 0
    out = capsys.readouterr().out
    assert ACCESSOR in out and "abc" not in out
    api.reply("GET", "/v1/acl/tokens/self", {"token": TOKEN})
    assert api.run("acl", "token", "self", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"token": TOKEN}
    api.reply("DELETE", f"/v1/acl/tokens/{ACCESSOR}", {"token": TOKEN, "index": 5})
    assert api.run("acl", "token", "revoke", ACCESSOR) == 0
    assert "revoked (index 5)" in capsys.readouterr().out


def test_refusal_is_an_error(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("GET", "/v1/acl/tokens", {"error": {"code": "forbidden", "message":
                                                  "permission denied: no policy grants "
                                                  "acl:read"}}, status=403)
    assert api.run("acl", "token", "list") == 1
    assert "acl:read" in capsys.readouterr().err


def test_node_intro_create(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.reply("POST", "/v1/nodes/intro", {"token": {**TOKEN, "type": "intro", "node": "n1",
                                                    "secret_id": "intro-secret"}})
    assert api.run("node", "intro", "create", "--name", "n1", "--ttl", "5m") == 0
    assert api.last.body == {"name": "n1", "ttl_s": 300.0}
    assert "intro-secret" in capsys.readouterr().out
    assert api.run("node", "intro", "create") == 0
    assert api.last.body == {"ttl_s": 600.0}


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("10m", 600.0),
                                               ("2h", 7200.0), ("1.5d", 129600.0)])
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1m", "10x", "m"])
def test_bad_duration(text: str) -> None:
    with pytest.raises(Exception, match="duration"):
        duration(text)
