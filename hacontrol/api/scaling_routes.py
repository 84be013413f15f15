"""A job's scaling metric: pushing a value of an external one, reading what the leader
knows of it.

Both are served by the leader, whose memory holds the values (`scheduler/metric_scale.py`
says why not the log): another replica answers 307 to the leader's API, as the
membership routes do. A push costs no log entry and no read barrier: the job is looked
up in the state the leader has applied.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from hacontrol.controller.errors import NotLeader
from hacontrol.model.checks import check_name, number
from hacontrol.model.errors import conflict, invalid, not_found
from hacontrol.model.records import Job
from hacontrol.model.spec import MetricSpec
from hacontrol.model.spec_parse import MAX_METRIC_VALUE, METRIC_NAME_RE
from hacontrol.model.states import MetricSource
from hacontrol.scheduler import metric_scale
from hacontrol.scheduler.leader_state import LeaderState, PushedValue

from .openapi import READ_ERRORS, WRITE_ERRORS, Operation, documented
from .request import cluster_of, json_body, leader_of, only_fields, store_of
from .schemas import NAME, NUMBER, STRING

REDIRECT = ("Served by the leader, which keeps the values in memory: another replica "
            "answers 307 to the leader's API.")
METRIC_PATH = {"metric": {"type": "string", "pattern": "^" + METRIC_NAME_RE.pattern + "$"}}
PUSHED = {"type": "object", "required": ["namespace", "job", "metric", "value",
                                         "stale_after_s"],
          "properties": {"namespace": NAME, "job": NAME, "metric": STRING, "value": NUMBER,
                         "stale_after_s": NUMBER}}
STATUS = {"type": "object", "required": ["namespace", "job", "count", "metric"],
          "properties": {
              "namespace": NAME, "job": NAME, "count": {"type": "integer"},
              "metric": {"type": ["object", "null"]},
              "total": {"type": ["number", "null"]},
              "complete": {"type": ["boolean", "null"]},
              "age_s": {"type": ["number", "null"]},
              "decision": {"type": ["string", "null"]}}}


def _leading(request: web.Request) -> LeaderState:
    """This term's leader memory; on another replica a redirect to the leader (or a 503
    not_leader while none is known)."""
    leader = leader_of(request)
    if leader is None:
        st = cluster_of(request).status()
        api = st["leader_api"]
        if api:
            raise web.HTTPTemporaryRedirect(api.rstrip("/") + request.path_qs)
        raise NotLeader(st["leader"], api)
    return leader


def _job(request: web.Request) -> Job:
    ns = check_name(request.match_info["ns"], "namespace")
    name = check_name(request.match_info["name"], "name")
    job = store_of(request).read_local(lambda m: m.jobs.get((ns, name)))
    if job is None:
        raise not_found(f"job {ns}/{name}", "name")
    return job


def _external_metric(job: Job, metric: str) -> MetricSpec:
    """The job's external metric named `metric`; a clear refusal for anything else."""
    sc = job.spec.scaling
    m = sc.metric if sc is not None else None
    if m is None or m.name != metric:
        what = "no scaling metric" if m is None else f"scaling metric {m.name!r}"
        raise not_found(f"metric {metric!r} of job {job.namespace}/{job.name} (it has "
                        f"{what})", "metric")
    if m.source != MetricSource.EXTERNAL:
        raise conflict(f"metric {metric!r} of job {job.namespace}/{job.name} has source "
                       f"{m.source}: the agents scrape it, it cannot be pushed", "metric")
    return m


@documented(Operation(
    "Push the current value of a job's external scaling metric (a queue's length, say)",
    "jobs", description="The value counts for the metric's `stale_s` (60 s by default): "
    "push again well within it. " + REDIRECT, path=METRIC_PATH,
    body={"type": "object", "required": ["value"], "additionalProperties": False,
          "properties": {"value": {"type": "number", "minimum": 0,
                                   "maximum": MAX_METRIC_VALUE}}},
    ok=PUSHED, write=True, errors=WRITE_ERRORS))
async def push_metric(request: web.Request) -> web.Response:
    _leading(request)
    job = _job(request)
    metric = request.match_info["metric"]
    spec = _external_metric(job, metric)
    body = await json_body(request)
    only_fields(body, ("value",))
    if "value" not in body:
        raise invalid("value", "required: the metric's current value")
    value = number(body["value"], "value", maximum=MAX_METRIC_VALUE)
    # Asked again after the body arrived: the memory of the term that leads now.
    _leading(request).pushed[job.key] = PushedValue(metric, value, time.monotonic())
    return web.json_response({"namespace": job.namespace, "job": job.name, "metric": metric,
                              "value": value, "stale_after_s": spec.stale_after_s})


@documented(Operation(
    "What the leader knows of a job's scaling metric: its total, its age, the decision",
    "jobs", description=REDIRECT, ok=STATUS, errors=READ_ERRORS))
async def get_metric_status(request: web.Request) -> web.Response:
    leader = _leading(request)
    job = _job(request)
    sc = job.spec.scaling
    out: dict[str, Any] = {"namespace": job.namespace, "job": job.name,
                           "count": job.spec.count, "metric": None, "total": None,
                           "complete": None, "age_s": None,
                           "decision": leader.scale_notes.get(job.key)}
    if sc is None or sc.metric is None:
        return web.json_response(out)
    out["metric"] = sc.metric.to_dict()
    now = time.monotonic()
    reading = store_of(request).read_local(
        lambda m: metric_scale.reading(m, job, leader, now))
    if reading is not None:
        out["total"], out["complete"] = reading.total, reading.complete
    pushed = leader.pushed.get(job.key)
    if sc.metric.source == MetricSource.EXTERNAL and pushed is not None:
        out["age_s"] = round(now - pushed.at, 3)
    return web.json_response(out)


def register(app: web.Application) -> None:
    app.router.add_put("/v1/jobs/{ns}/{name}/metrics/{metric}", push_metric)
    app.router.add_get("/v1/jobs/{ns}/{name}/metrics", get_metric_status)
