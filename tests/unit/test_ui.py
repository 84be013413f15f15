"""The web UI's files as every replica serves them, and what the UI learns of a token."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hacontrol.api import ui
from hacontrol.api.app import build_app
from hacontrol.scheduler.leader_state import Leadership

from .api_fake import TOKEN, ApplyingReplica
from .test_acl_api import SPEC, Call, LocalReplica, bootstrap, client_token, session

STATIC = Path(ui.__file__).parent.parent / "ui" / "static"


def get(path: str, headers: dict[str, str] | None = None,
        allow_redirects: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One GET without a token (the UI's files are open), redirects not followed on ask."""
    async def go() -> tuple[int, dict[str, str], bytes]:
        replica = ApplyingReplica()
        app = build_app(replica, replica, Leadership(lambda: 3), TOKEN)
        async with TestClient(TestServer(app)) as client:
            resp = await client.get(path, headers=headers or {},
                                    allow_redirects=allow_redirects)
            return resp.status, dict(resp.headers), await resp.read()
    return asyncio.run(go())


def test_the_entry_page_and_its_files_are_served_with_a_strict_policy() -> None:
    status, headers, body = get("/ui/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    page = body.decode()
    assert "<title>hacontrol</title>" in page
    # Every script is a file (an inline one would be refused by the policy anyway).
    assert re.findall(r"<script\b[^>]*>", page) == ['<script type="module" src="app.js">']
    status, headers, body = get("/ui/pages/jobs.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert headers["Content-Security-Policy"] == ui.CSP


def test_old_addresses_redirect_to_the_ui() -> None:
    for path in ("/ui", "/"):
        status, headers, _ = get(path, allow_redirects=False)
        assert status == 302 and headers["Location"] == "/ui/"


def test_every_shipped_file_is_served_and_nothing_else() -> None:
    shipped = {str(p.relative_to(STATIC)) for p in STATIC.rglob("*") if p.is_file()}
    assert set(ui.FILES) == shipped
    assert {"app.js", "api.js", "index.html", "vendor/js-yaml.mjs"} <= shipped


@pytest.mark.parametrize("path", [
    "/ui/../hacontrol/api/auth.py", "/ui/%2e%2e/%2e%2e/pyproject.toml",
    "/ui/..%2f__init__.py", "/ui/__init__.py", "/ui//etc/passwd", "/ui/static/app.js",
    "/ui/pages/../../api/ui.py", "/ui/app.js%00.html"])
def test_no_path_reaches_outside_the_shipped_files(path: str) -> None:
    status, _, body = get(path)
    # 404 from the UI's route, or 401 where the client's normalised path matched no route.
    assert status in (401, 404), (path, body[:200])
    assert b"import" not in body and b"[build-system]" not in body


def test_no_shipped_file_uses_inline_code_or_markup_from_strings() -> None:
    for f in STATIC.rglob("*"):
        if f.suffix not in (".js", ".html") or "vendor" in f.parts:
            continue
        text = f.read_text()
        # Cluster data is put in the page as text nodes only, never parsed as HTML.
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                       "eval(", "new Function", " style=", "<style"):
            assert banned not in text, (f.name, banned)


def test_an_unchanged_file_answers_304_to_its_etag() -> None:
    _, headers, _ = get("/ui/app.js")
    status, _, body = get("/ui/app.js", headers={"If-None-Match": headers["Etag"]})
    assert status == 304 and body == b""


def test_token_self_tells_what_the_token_may_do() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("PUT", "/v1/namespaces/ops", {}, root)[0] == 200
        assert call("PUT", "/v1/jobs/default/web", SPEC, root)[0] == 200
        ro, _ = client_token(call, root, "ro", {"namespaces": {"*": {"policy": "read"}}})
        status, body = call("GET", "/v1/acl/tokens/self", token=ro)
        assert status == 200 and body["token"]["type"] == "client"  # the old answer stays
        perms = body["permissions"]
        assert perms["cluster"] == []
        assert perms["namespaces"] == {ns: ["list-jobs", "read-job", "read-logs"]
                                       for ns in ("default", "ops")}
        op, _ = client_token(call, root, "op", {
            "namespaces": {"ops": {"policy": "write"}, "default": {"policy": "deny"}},
            "node": "write", "operator": "read"})
        perms = call("GET", "/v1/acl/tokens/self", token=op)[1]["permissions"]
        assert perms["cluster"] == ["node:read", "node:write", "operator:read"]
        assert perms["namespaces"]["default"] == []
        assert set(perms["namespaces"]["ops"]) == {
            "list-jobs", "read-job", "read-logs", "submit-job", "scale-job", "alloc-lifecycle"}
        # What it says is what the API enforces.
        assert call("POST", "/v1/jobs/default/web/scale", {"count": 2}, op)[0] == 403
        assert call("PUT", "/v1/jobs/ops/web", SPEC, op)[0] == 200
        perms = call("GET", "/v1/acl/tokens/self", token=root)[1]["permissions"]
        assert "acl:write" in perms["cluster"] and "run-as-root" in perms["namespaces"]["ops"]
    session(LocalReplica(), script)


def test_members_status_needs_a_token_and_answers_this_replica() -> None:
    def script(call: Call) -> None:
        root = bootstrap(call)
        assert call("GET", "/v1/status/members")[0] == 401
        status, body = call("GET", "/v1/status/members", token=root)
        assert status == 200 and body["leader"] == "c1"
        assert [(m["id"], m["role"], m["lag"]) for m in body["members"]] == [("c1", "leader", 0)]
    session(LocalReplica(), script)


def test_lag_is_measured_from_the_leaders_commit_index() -> None:
    from hacontrol.api.members import with_lag
    members = [{"id": "c1", "reachable": True, "commit_index": 10, "applied_index": 10},
               {"id": "c2", "reachable": True, "commit_index": 9, "applied_index": 7},
               {"id": "c3", "reachable": False}]
    assert [m["lag"] for m in with_lag(members, "c1")] == [0, 3, None]
    # No reachable leader: measured from the furthest replica heard from.
    assert [m["lag"] for m in with_lag(members, "c3")] == [0, 3, None]


def test_the_package_data_globs_cover_every_file() -> None:
    # pyproject.toml ships "static/*" and "static/*/*": a deeper file would be served from a
    # checkout but missing from an installed wheel.
    text = (STATIC.parents[2] / "pyproject.toml").read_text()
    assert '"hacontrol.ui" = ["static/*", "static/*/*"]' in text
    assert all(len(p.relative_to(STATIC).parts) <= 2 for p in STATIC.rglob("*"))
