"""What a job's health checks and defaults can reach: network checks stay on this node,
paths cannot smuggle headers, and jobs run unprivileged unless they ask."""

from __future__ import annotations

import asyncio
import time

import pytest

from hacontrol.agent.assignments import allocation_spec
from hacontrol.agent.health import probe
from hacontrol.agent.main import default_user_for
from hacontrol.model.errors import Rejection
from hacontrol.model.messages import Assignment
from hacontrol.model.spec import HealthCheck
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.model.states import AllocState, DesiredState, HealthCheckType


@pytest.mark.parametrize("path", ["/ok\r\nX-Evil: 1", "/ok\nGET /admin", "/a b", "/\x00"])
def test_an_http_check_path_cannot_carry_cr_lf_or_spaces(path: str) -> None:
    with pytest.raises(Rejection) as exc:
        parse_job_spec({"command": ["true"],
                        "health": {"type": "http", "port": 80, "path": path}})
    assert exc.value.field == "health.path"


async def _serve_once(seen: list[bytes]) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_an_http_check_reaches_its_own_node() -> None:
    async def go() -> bool:
        seen: list[bytes] = []
        server, port = await _serve_once(seen)
        async with server:
            for host in ("127.0.0.1", "localhost"):
                check = HealthCheck(HealthCheckType.HTTP, port=port, host=host, path="/ok")
                assert (await probe(check)).ok, host
        return all(s.startswith(b"GET /ok HTTP/1.0\r\n") for s in seen)
    assert asyncio.run(go())


@pytest.mark.parametrize("kind", [HealthCheckType.HTTP, HealthCheckType.TCP])
@pytest.mark.parametrize("host", ["192.0.2.1", "198.51.100.7", "2001:db8::1"])
def test_network_checks_do_not_reach_other_machines(kind: HealthCheckType, host: str) -> None:
    # Documentation-only addresses: never this node's. Refused before any connection, so
    # at once rather than after the timeout.
    check = HealthCheck(kind, port=80, host=host, path="/", timeout_s=5.0)
    started = time.monotonic()
    result = asyncio.run(probe(check))
    assert not result.ok
    assert "not an address of this node" in result.detail
    assert time.monotonic() - started < 2.0


def _assignment(**spec: object) -> Assignment:
    return Assignment("web-000001", "default", "web", 1, DesiredState.RUN, AllocState.PENDING,
                      parse_job_spec({"command": ["true"], **spec}))


def test_jobs_run_unprivileged_unless_they_ask_for_root() -> None:
    assert default_user_for(None, euid=0) == "nobody"
    assert default_user_for("svc", euid=0) == "svc"
    assert default_user_for(None, euid=1000) is None  # cannot change users anyway
    assert allocation_spec(_assignment(), "n1", "nobody").user == "nobody"
    assert allocation_spec(_assignment(user="root"), "n1", "nobody").user == "root"
    assert allocation_spec(_assignment(user="app"), "n1", "nobody").user == "app"
    assert allocation_spec(_assignment(), "n1", None).user is None
