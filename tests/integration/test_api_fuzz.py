"""Fuzzing every route of the controller API with schemathesis, against a real 3-replica
cluster, from the document the cluster serves (`GET /v1/openapi.json`).

Every operation gets schema-conforming and schema-violating requests (derandomized, so a run
is repeatable). The findings must be: no 5xx, no hang (each request has a timeout), every
answer documented (status, media type, body), and every replica still ready afterwards.

`make test` runs a short form; `make fuzz` the long one (HACONTROL_FUZZ_EXAMPLES examples
per operation and mode, with shrinking, so a failure comes back minimal).

No agent runs here, so no job the fuzzer submits ever starts a process; node addresses the
fuzzer registers through the agent sync are rewritten to a closed loopback port, so the
controllers never carry a request anywhere but this machine.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .harness import Cluster, free_ports, http, wait_for

LONG = "HACONTROL_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("HACONTROL_FUZZ_EXAMPLES", "6"))
# Long enough for a write (5 s deadline in the controller) and an agent long poll (2 s).
REQUEST_TIMEOUT = (3.0, 8.0)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def designed_503(case: schemathesis.Case, response: requests.Response) -> bool:
    """A 503 that is the documented answer, not a failure: an allocation control or log
    request carried to a fuzzed node (whose agent does not exist), or an agent sync that
    reached a replica which no longer leads (an agent follows `leader_api`)."""
    if response.status_code != 503:
        return False
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    if case.path.startswith("/v1/allocations/{id}/"):
        return "unreachable" in error.get("message", "")
    return case.path == "/v1/agent/sync" and error.get("code") == "not_leader"


def confine(case: schemathesis.Case, closed_port: int) -> None:
    """Keep what the fuzzer sends from reaching beyond this test."""
    if case.path == "/v1/events":
        # The stream never ends by design; it is tested on its own below.
        case.query = {**(case.query or {}), "follow": "false"}
        (case.headers or {}).pop("Last-Event-ID", None)
    if case.path.startswith("/v1/services") and "index" in (case.query or {}):
        # A blocking query waits by design (up to 60 s); it is tested on its own.
        case.query = {**(case.query or {}), "wait": "10ms"}
    if case.path == "/v1/allocations/{id}/logs":
        case.query = {**(case.query or {}), "follow": "false"}
    if case.path == "/v1/alerts/{name}" and isinstance(case.body, dict) \
            and isinstance(case.body.get("sinks"), list):
        # A rule's sinks run on the leader's host: a command it accepted would really run,
        # and a webhook really be called. Their parsing is fuzzed as generated; what they
        # reach is pinned down.
        for sink in case.body["sinks"]:
            if isinstance(sink, dict) and isinstance(sink.get("command"), list):
                sink["command"] = ["/bin/true"]
            if isinstance(sink, dict) and isinstance(sink.get("url"), str):
                sink["url"] = f"http://127.0.0.1:{closed_port}/"
    if case.path == "/v1/agent/sync" and isinstance(case.body, dict):
        node = case.body.get("node")
        if isinstance(node, dict) and "address" in node:
            node["address"] = f"http://127.0.0.1:{closed_port}"


def fuzz_operation(operation: Any, mode: schemathesis.GenerationMode, base_url: str,
                   token: str, session: requests.Session, closed_port: int) -> None:
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if LONG else [])

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=phases, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        confine(case, closed_port)
        try:
            response = case.call(base_url=base_url, session=session, timeout=REQUEST_TIMEOUT,
                                 headers={"Authorization": f"Bearer {token}"})
        except requests.Timeout:
            raise AssertionError(f"no answer within {REQUEST_TIMEOUT[1]} s (a hang): "
                                 f"{case.as_curl_command()}") from None
        if designed_503(case, response):
            return
        case.validate_response(response, checks=CHECKS)

    run()


@contextlib.contextmanager
def session_stream(url: str, token: str) -> Iterator[bytes]:
    """The first chunk of a streamed answer; the stream is closed on leaving."""
    with requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True,
                      timeout=REQUEST_TIMEOUT) as resp:
        assert resp.status_code == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        yield next(resp.iter_content(chunk_size=None))


@pytest.mark.timeout(0 if LONG else 240)
def test_fuzz_every_route_then_the_cluster_is_still_ready(cluster: Cluster) -> None:
    leader = cluster.leader()  # the agent sync answers only there
    doc = http("GET", f"{leader.api}/v1/openapi.json", token=cluster.token)
    assert doc.status == 200
    schema = schemathesis.openapi.from_dict(doc.body)
    closed_port = free_ports(1)[0]
    failures: list[str] = []
    took: dict[str, float] = {}
    started = time.monotonic()
    with requests.Session() as session:
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 23
        for operation in operations:
            begun = time.monotonic()
            for mode in (schemathesis.GenerationMode.POSITIVE,
                         schemathesis.GenerationMode.NEGATIVE):
                try:
                    fuzz_operation(operation, mode, leader.api, cluster.token, session,
                                   closed_port)
                except Unsatisfiable:
                    # Nothing to violate: no parameter and no body (health, the page).
                    assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
                # Every operation is fuzzed, and every finding reported at the end.
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
            took[operation.label] = time.monotonic() - begun
    elapsed = time.monotonic() - started
    print(f"fuzzed {len(operations)} operations, {EXAMPLES} examples per mode, "
          f"in {elapsed:.0f} s; slowest:")
    for label, seconds in sorted(took.items(), key=lambda kv: -kv[1])[:5]:
        print(f"  {seconds:6.1f} s  {label}")
    for r in cluster.replicas:  # leadership should not move under this load; say if it did
        print(r.id, [line.split("INFO ")[-1] for line in r.proc.log.read_text().splitlines()
                     if "leading term" in line])

    def all_ready() -> bool:
        return all(http("GET", f"{r.api}/v1/health/ready", timeout=2).status == 200
                   for r in cluster.replicas)
    wait_for(all_ready, 20, what="every replica ready after the fuzzing")
    assert all(r.proc.alive() for r in cluster.replicas)
    # The event stream, left out above (it never ends by design), answers at once.
    with session_stream(f"{leader.api}/v1/events?follow=true", cluster.token) as first:
        assert first
    assert not failures, f"{len(failures)} finding(s) in {elapsed:.0f} s:\n\n" + \
        "\n\n".join(failures)

