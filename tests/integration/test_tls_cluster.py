"""A cluster with mutual TLS on every link: the API over HTTPS, the agent link and the
controllers' calls to agents with role certificates, and the refusals that go with them."""

from __future__ import annotations

import asyncio
import socket
import ssl
import stat
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from hacontrol.acl.secrets import controller_credential
from hacontrol.agent.link import ControllerLink
from hacontrol.tls.context import TLSConfig, client_context, server_context
from hacontrol.tls.pki import create_ca, create_cert
from hacontrol.tls.roles import Role

from .harness import Cluster, free_ports, http, wait_for
from .test_agent_e2e import job, running


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tls") / "cluster", tls=True)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def agent_port(tls_cluster: Cluster) -> int:
    port = free_ports(1)[0]
    tls_cluster.start_agent("n1", port=port)
    return port


def tls_files(c: Cluster, role: Role) -> TLSConfig:
    d = c.root / "tls"
    return TLSConfig(d / "ca.pem", d / f"{role.value}.pem", d / f"{role.value}-key.pem")


def test_a_job_runs_and_its_logs_come_back_through_mutual_tls(
        tls_cluster: Cluster, agent_port: int) -> None:
    marker = uuid.uuid4().hex
    spec = job(marker) | {"command": ["sh", "-c", f"echo hello-{marker}; exec sleep 600"]}
    assert tls_cluster.write("PUT", "/v1/jobs/default/tlsweb", spec).status == 200
    (alloc,) = wait_for(lambda: running(tls_cluster, "tlsweb", 1), 30,
                        what="allocation running over the TLS agent link")
    nodes = tls_cluster.api("GET", "/v1/nodes").body["nodes"]
    assert [n["address"] for n in nodes] == [f"https://127.0.0.1:{agent_port}"]

    def logs() -> str | None:
        url = f"{tls_cluster.replicas[0].api}/v1/allocations/{alloc['id']}/logs?tail=10"
        req = urllib.request.Request(url, headers={"Authorization":
                                                   f"Bearer {tls_cluster.token}"})
        with urllib.request.urlopen(req, timeout=5, context=tls_cluster.client_tls) as r:
            text = r.read().decode()
        return text if f"hello-{marker}" in text else None
    # The controllers carry the request to the agent over mutual TLS.
    assert wait_for(logs, 20, what="logs through the controllers")


def test_a_plain_http_client_gets_nothing_from_the_https_api(tls_cluster: Cluster) -> None:
    r = tls_cluster.replicas[0]
    with socket.create_connection(("127.0.0.1", r.api_port), timeout=5) as s:
        s.sendall(f"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                  f"{tls_cluster.token}\r\n\r\n".encode())
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/1.1 200" not in got and b"term" not in got
    with pytest.raises(OSError):
        http("GET", f"http://127.0.0.1:{r.api_port}/v1/status", token=tls_cluster.token,
             timeout=5)


def agent_call(c: Cluster, port: int, client: ssl.SSLContext, name: str = "agent.hacontrol"
               ) -> int | None:
    """The status of an authenticated call to the agent's API with `client`; None when
    the agent would not talk (the handshake failed, or with TLS 1.3, where the client's
    certificate is checked after the client's side of the handshake, the connection was
    closed without an answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname=name) as s:
            s.sendall(f"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                      f"Authorization: Bearer {controller_credential(c.secret)}\r\n\r\n".encode())
            head = s.recv(64)
    except (ssl.SSLError, ConnectionError):
        return None
    return int(head.split()[1]) if head else None


def test_the_agent_takes_calls_from_controllers_only(tls_cluster: Cluster,
                                                     agent_port: int) -> None:
    assert agent_call(tls_cluster, agent_port,
                      client_context(tls_files(tls_cluster, Role.SERVER))) == 200
    # The right CA, the wrong role: an agent or an operator's certificate.
    for role in (Role.AGENT, Role.CLI):
        assert agent_call(tls_cluster, agent_port,
                          client_context(tls_files(tls_cluster, role))) == 403
    # No certificate at all.
    assert agent_call(tls_cluster, agent_port,
                      client_context(TLSConfig(tls_files(tls_cluster, Role.SERVER).ca))) == 403


def test_an_agent_refuses_a_controller_certificate_from_another_ca(
        tls_cluster: Cluster, agent_port: int, tmp_path: Path) -> None:
    other = create_ca(tmp_path)
    create_cert(other, Role.SERVER, tmp_path)
    stranger = client_context(TLSConfig(tmp_path / "ca.pem", tmp_path / "server.pem",
                                        tmp_path / "server-key.pem"))
    # The stranger trusts its own CA, so it must accept the agent's certificate to get as
    # far as showing its own: trust the cluster's CA too.
    stranger.load_verify_locations(str(tls_files(tls_cluster, Role.SERVER).ca))
    assert agent_call(tls_cluster, agent_port, stranger) is None
    # The same stranger without its foreign certificate gets as far as the role check.
    assert agent_call(tls_cluster, agent_port, client_context(
        TLSConfig(tls_files(tls_cluster, Role.SERVER).ca))) == 403


def test_only_an_agent_certificate_may_sync(tls_cluster: Cluster) -> None:
    url = tls_cluster.replicas[0].api + "/v1/agent/sync"
    body = {"node": {"name": "intruder", "cpu": 1, "memory_mb": 1, "address": ""},
            "reports": [], "index": 0, "wait_s": 0, "term": 0}
    r = http("POST", url, body, token=tls_cluster.token, context=tls_cluster.client_tls)
    assert r.status == 403 and r.body["error"]["field"] == "certificate"
    nodes = tls_cluster.api("GET", "/v1/nodes").body["nodes"]
    assert "intruder" not in [n["name"] for n in nodes]


def test_an_agent_certificate_cannot_serve_as_a_controller(tls_cluster: Cluster) -> None:
    """A host holding an agent's certificate poses as a controller: the agent's link
    refuses the handshake and never sends it its token or a report."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"term": 1, "leader": "x", "index": 1,
                                  "allocations": []})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/agent/sync", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        ctx = server_context(tls_files(tls_cluster, Role.AGENT), require_client_cert=False)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            link_tls = client_context(tls_files(tls_cluster, Role.AGENT))
            async with ControllerLink([f"https://127.0.0.1:{port}"], "t", link_tls) as link:
                assert await link.sync({"name": "n9", "cpu": 1, "memory_mb": 1,
                                        "address": ""}, [], 0) is None
        finally:
            await runner.cleanup()
    asyncio.run(main())
    assert seen == []


def test_data_directories_are_private(tls_cluster: Cluster, agent_port: int) -> None:
    """Journals, dumps, logs and pid records: directories 0700, files 0600."""
    wait_for(lambda: running(tls_cluster, "tlsweb", 1), 30, what="the job from above")
    roots = [tls_cluster.root / r.id for r in tls_cluster.replicas] + [tls_cluster.root / "n1"]
    files = []
    for root in roots:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        for path in root.rglob("*"):
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_dir():
                assert mode & 0o077 == 0, f"{path} is {mode:04o}"
            elif path.is_file():
                files.append(path.name)
                assert mode & 0o077 == 0, f"{path} is {mode:04o}"
    assert {"stdout.log", "pid.json"} <= set(files)
    assert any("journal" in f for f in files), files
