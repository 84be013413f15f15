"""The OpenAPI document: it describes exactly the routes the server has, it is a document
the tools accept, and its bodies say what the model really reads and writes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from aiohttp import web

from hacontrol.api import openapi, schemas
from hacontrol.api.app import build_app
from hacontrol.model.messages import NodeInfo, SyncAnswer, SyncRequest
from hacontrol.model.spec import StopSpec
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.scheduler.leader_state import Leadership

from .state_scenario import FULL_SPEC, SPECS, run
from .test_api_errors import TOKEN, FakeReplica, call


def app_of() -> web.Application:
    r = FakeReplica()
    return build_app(r, r, Leadership(lambda: 3), TOKEN)


def served_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every route the router has (HEAD comes with GET)."""
    return {(r.method, r.resource.canonical) for r in app.router.routes()
            if r.method != "HEAD" and r.resource is not None}


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}


def test_every_route_is_documented_and_every_documented_handler_is_routed() -> None:
    app = app_of()
    # To fix a failure here: put @documented(Operation(...)) above the named handler
    # (see hacontrol/api/openapi.py), or register the handler in its module's register().
    assert openapi.undocumented(app) == []
    assert openapi.unrouted(app) == []


def test_the_served_document_lists_exactly_the_routes_the_router_has() -> None:
    app = app_of()
    status, _, raw = call(FakeReplica(), "GET", "/v1/openapi.json")
    assert status == 200
    doc = json.loads(raw)
    served, documented = served_routes(app), documented_routes(doc)
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented routes the server does not have"
    assert ("PUT", "/v1/jobs/{ns}/{name}") in documented


def test_a_route_without_an_operation_is_named_with_its_handler() -> None:
    app = app_of()

    async def put_widget(request: web.Request) -> web.Response:
        return web.json_response({})
    app.router.add_put("/v1/widgets/{name}", put_widget)
    missing = openapi.undocumented(app)
    assert len(missing) == 1
    assert missing[0].startswith("PUT /v1/widgets/{name} (add @documented")
    assert "put_widget" in missing[0]
    assert ("PUT", "/v1/widgets/{name}") not in documented_routes(openapi.document(app))


def test_a_handler_wrapped_by_another_decorator_stays_documented() -> None:
    import functools

    from hacontrol.api.routes import get_job

    @functools.wraps(get_job)
    async def checked(request: web.Request) -> web.StreamResponse:
        return await get_job(request)
    app = app_of()
    app.router.add_get("/v1/jobs2/{ns}/{name}", checked)
    assert openapi.undocumented(app) == []
    assert "get" in openapi.document(app)["paths"]["/v1/jobs2/{ns}/{name}"]


def test_the_document_needs_the_token_like_every_other_read() -> None:
    status, _, raw = call(FakeReplica(), "GET", "/v1/openapi.json", token=None)
    assert status == 401
    assert json.loads(raw)["error"]["code"] == "unauthorized"


def test_the_document_loads_in_schemathesis_and_every_schema_compiles() -> None:
    doc = openapi.document(app_of())
    loaded = schemathesis.openapi.from_dict(doc)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == len(documented_routes(doc))

    def schemas_in(node: Any) -> list[dict[str, Any]]:
        if isinstance(node, dict):
            found = [node["schema"]] if isinstance(node.get("schema"), dict) else []
            return found + [s for v in node.values() for s in schemas_in(v)]
        if isinstance(node, list):
            return [s for v in node for s in schemas_in(v)]
        return []
    for schema in schemas_in(doc["paths"]):
        if "$ref" not in json.dumps(schema):
            jsonschema_rs.Draft202012Validator(schema)


def test_public_routes_are_only_the_probes_the_page_and_bootstrap() -> None:
    doc = openapi.document(app_of())
    public = {p for p, ops in doc["paths"].items() for op in ops.values()
              if op.get("security") == []}
    # and a restore's outcome, whose secret receipt is the credential (a restore may
    # replace the token that asked for it: tests/unit/test_snapshot_api.py)
    assert public == {"/v1/health", "/v1/health/ready", "/v1/status", "/", "/ui", "/ui/",
                      "/ui/{path}", "/v1/acl/bootstrap",
                      "/v1/operator/snapshot/restore/{receipt}"}
    # and the document agrees with the permission table the API enforces
    from hacontrol.api.auth import OPEN, ROUTES
    assert public == {path for (_m, path), need in ROUTES.items() if need == OPEN}


# ----------------------------------------------------------- bodies from the model

def keys_of(value: Any, schema: dict[str, Any], at: str = "") -> list[str]:
    """Paths of the object keys in `value` that `schema` does not declare."""
    out: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for k, v in value.items():
            sub = schema["properties"].get(k)
            if sub is None:
                out.append(f"{at}{k}")
            else:
                out += keys_of(v, sub, f"{at}{k}.")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for v in value:
            out += keys_of(v, schema["items"], at)
    for alt in schema.get("anyOf", []):
        if isinstance(value, dict) and alt.get("type") == "object":
            out += keys_of(value, alt, at)
    return out


@pytest.mark.parametrize("i", range(len(SPECS)))
def test_every_spec_the_parser_accepts_and_encodes_fits_the_spec_schema(i: int) -> None:
    schema = schemas.spec_schema()
    jsonschema_rs.validate(schema, SPECS[i])  # the input as written
    encoded = parse_job_spec(SPECS[i]).to_dict()
    jsonschema_rs.validate(schema, encoded)  # the encoding with every default filled in
    assert keys_of(encoded, schema) == []


def test_the_spec_schema_declares_every_field_the_full_spec_uses() -> None:
    schema = schemas.spec_schema()
    encoded = parse_job_spec(FULL_SPEC).to_dict()
    declared = set(schema["properties"]) - {"name", "namespace"}
    # `spread`, `ports` and `services` are newer than the golden scenario's spec (whose
    # digest must not change).
    assert declared == set(encoded) | {"type", "shell", "spread", "ports", "services"} - {"name"}
    with_ports = {"command": ["x"], "ports": [{"name": "http"}, {"name": "a", "static": 80}],
                  "services": [{"name": "websvc", "port": "http"}],
                  "health": {"type": "http", "port": "http"}}
    jsonschema_rs.validate(schema, with_ports)
    jsonschema_rs.validate(schema, parse_job_spec(with_ports).to_dict())
    # Names as encoded (`scaling.min`), not as the dataclass calls them (`min_count`).
    assert set(schema["properties"]["scaling"]["anyOf"][0]["properties"]) == \
        {"min", "max", "cpu_target", "cooldown_s", "metric", "target_per_instance",
         "scale_down_delay_s", "tolerance"}
    assert schema["properties"]["restart"]["properties"]["max_restarts"]["default"] == 5
    # The parser refuses unknown fields in every section, and so does the schema.
    assert schema["properties"]["restart"]["additionalProperties"] is False
    assert schema["properties"]["health"]["anyOf"][0]["additionalProperties"] is False


def test_a_field_added_to_a_spec_section_appears_by_itself() -> None:
    @dataclasses.dataclass(frozen=True)
    class StopWithGrace(StopSpec):
        grace_s: float = 1.5

    schema = schemas.dataclass_schema(StopWithGrace, closed=True)
    assert schema["properties"]["grace_s"] == {"type": "number", "default": 1.5}
    assert schema["properties"]["signal"] == {"type": "string", "default": "SIGTERM"}
    assert schema["additionalProperties"] is False


def test_the_api_views_fit_their_schemas() -> None:
    m = run()
    for job in m.jobs.values():
        view = m.job_view(job)
        view["allocations"] = [m.alloc_view(a) for a in m.job_allocs(job)]
        jsonschema_rs.validate(schemas.JOB, view)
        assert keys_of(view, schemas.JOB) == []
        for version in job.history:
            jsonschema_rs.validate(schemas.VERSION, version.to_dict())
    for a in m.allocs.values():
        view = {**m.alloc_view(a), "metrics": None}
        jsonschema_rs.validate(schemas.ALLOCATION, view)
    for n in m.nodes.values():
        view = {**m.node_view(n), "last_heartbeat": None, "agent": None}
        jsonschema_rs.validate(schemas.NODE, view)
        assert keys_of(view, schemas.NODE) == []
    for ns in m.namespaces:
        jsonschema_rs.validate(schemas.NAMESPACE, m.namespace_view(ns))


def test_the_sync_messages_fit_their_schemas() -> None:
    m = run()
    node = next(iter(m.nodes))
    req = SyncRequest(NodeInfo(node, 4.0, 2048, "http://n1:1", {"zone": "a"}), [], 3, 1.0,
                      None, 2, {"pid": 1}, {"x": {"cpu_percent": 1.0}})
    jsonschema_rs.validate(schemas.SYNC_REQUEST, req.to_dict())
    # As `agent_routes.sync` builds it, and as the agent reads it back.
    answer = {"term": 3, "leader": "c1", "index": m.index, "fingerprint": "1.2", "acked": 0,
              "allocations": m.node_assignments(node), "poll_s": 5.0}
    jsonschema_rs.validate(schemas.SYNC_ANSWER, answer)
    assert answer["allocations"], "the scenario places allocations on this node"
    jsonschema_rs.validate(schemas.SYNC_ANSWER, SyncAnswer.from_dict(answer).to_dict())
