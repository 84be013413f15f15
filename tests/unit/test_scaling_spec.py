"""The `scaling` section: CPU scaling as before, and scaling on a metric (external or
prometheus), each bad value refused naming its field."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest

from hacontrol.api import schemas
from hacontrol.model.errors import Rejection
from hacontrol.model.spec import JobSpec, MetricSpec, ScalingSpec
from hacontrol.model.spec_parse import parse_job_spec
from hacontrol.model.states import MetricSource


def spec(scaling: Any) -> JobSpec:
    return parse_job_spec({"command": ["sleep", "1"], "scaling": scaling})


def refused(scaling: Any) -> str | None:
    with pytest.raises(Rejection) as exc:
        spec(scaling)
    assert exc.value.code == "invalid"
    return exc.value.field


def test_cpu_scaling_encodes_as_before() -> None:
    s = spec({"min": 1, "max": 4, "cpu_target": 0.5, "cooldown_s": 10})
    assert s.to_dict()["scaling"] == {"min": 1, "max": 4, "cpu_target": 0.5,
                                      "cooldown_s": 10.0}
    assert list(s.to_dict()["scaling"]) == ["min", "max", "cpu_target", "cooldown_s"]
    assert JobSpec.from_dict(s.to_dict()) == s


def test_external_metric_is_parsed_and_round_trips() -> None:
    s = spec({"min": 0, "max": 10, "cooldown_s": 30,
              "metric": {"name": "queue_length", "source": "external"},
              "target_per_instance": 10})
    assert s.scaling == ScalingSpec(0, 10, ScalingSpec.cpu_target, 30.0,
                                    MetricSpec("queue_length", MetricSource.EXTERNAL), 10.0)
    enc = s.to_dict()["scaling"]
    assert enc == {"min": 0, "max": 10, "cooldown_s": 30.0,
                   "metric": {"name": "queue_length", "source": "external"},
                   "target_per_instance": 10.0}
    assert JobSpec.from_dict(s.to_dict()) == s
    assert s.scaling is not None and s.scaling.metric is not None
    assert s.scaling.metric.stale_after_s == 60.0
    assert s.scaling.down_delay_s == 60.0 and s.scaling.band == 0.1


def test_prometheus_metric_with_port_path_and_interval() -> None:
    s = spec({"min": 1, "max": 5, "metric": {"name": "jobs_waiting", "source": "prometheus",
                                             "port": 9100, "path": "/m", "interval_s": 1},
              "target_per_instance": 2.5, "scale_down_delay_s": 5, "tolerance": 0.2})
    sc = s.scaling
    assert sc is not None and sc.metric is not None
    assert (sc.metric.port, sc.metric.scrape_path, sc.metric.scrape_interval_s) == \
        (9100, "/m", 1.0)
    assert (sc.down_delay_s, sc.band) == (5.0, 0.2)
    assert JobSpec.from_dict(s.to_dict()) == s
    default = spec({"min": 1, "max": 2, "target_per_instance": 1,
                    "metric": {"name": "x", "source": "prometheus", "port": 80}})
    assert default.scaling is not None and default.scaling.metric is not None
    assert default.scaling.metric.scrape_path == "/metrics"
    assert "path" not in default.to_dict()["scaling"]["metric"]


EXT = {"name": "q", "source": "external"}
PROM = {"name": "q", "source": "prometheus", "port": 9100}


@pytest.mark.parametrize(("scaling", "field"), [
    ({"metric": EXT}, "scaling.target_per_instance"),
    ({"metric": EXT, "target_per_instance": 0}, "scaling.target_per_instance"),
    ({"metric": EXT, "target_per_instance": "10"}, "scaling.target_per_instance"),
    ({"metric": EXT, "target_per_instance": 1, "cpu_target": 0.5}, "scaling.cpu_target"),
    ({"target_per_instance": 10}, "scaling.target_per_instance"),
    ({"tolerance": 0.1}, "scaling.tolerance"),
    ({"metric": "queue_length", "target_per_instance": 1}, "scaling.metric"),
    ({"metric": {"source": "external"}, "target_per_instance": 1}, "scaling.metric.name"),
    ({"metric": {"name": "9lives"}, "target_per_instance": 1}, "scaling.metric.name"),
    ({"metric": {"name": "a b"}, "target_per_instance": 1}, "scaling.metric.name"),
    ({"metric": {"name": "q", "source": "statsd"}, "target_per_instance": 1},
     "scaling.metric.source"),
    ({"metric": {**EXT, "port": 9100}, "target_per_instance": 1}, "scaling.metric.port"),
    ({"metric": {**EXT, "stale_s": 0}, "target_per_instance": 1}, "scaling.metric.stale_s"),
    ({"metric": {**EXT, "labels": {}}, "target_per_instance": 1}, "scaling.metric.labels"),
    ({"metric": {"name": "q", "source": "prometheus"}, "target_per_instance": 1},
     "scaling.metric.port"),
    ({"metric": {**PROM, "port": 0}, "target_per_instance": 1}, "scaling.metric.port"),
    ({"metric": {**PROM, "port": "http"}, "target_per_instance": 1}, "scaling.metric.port"),
    ({"metric": {**PROM, "path": "metrics"}, "target_per_instance": 1},
     "scaling.metric.path"),
    ({"metric": {**PROM, "path": "/a b"}, "target_per_instance": 1}, "scaling.metric.path"),
    ({"metric": {**PROM, "path": "/m?x=1"}, "target_per_instance": 1},
     "scaling.metric.path"),
    ({"metric": {**PROM, "interval_s": 0}, "target_per_instance": 1},
     "scaling.metric.interval_s"),
    ({"metric": {**PROM, "stale_s": 5}, "target_per_instance": 1}, "scaling.metric.stale_s"),
    ({"min": 0, "max": 3, "metric": PROM, "target_per_instance": 1}, "scaling.min"),
    ({"metric": EXT, "target_per_instance": 1, "tolerance": 0.9}, "scaling.tolerance"),
    ({"metric": EXT, "target_per_instance": 1, "scale_down_delay_s": -1},
     "scaling.scale_down_delay_s"),
])
def test_bad_metric_scaling_is_refused_naming_the_field(scaling: dict[str, Any],
                                                        field: str) -> None:
    assert refused(scaling) == field


def test_metric_specs_fit_the_spec_schema_as_written_and_encoded() -> None:
    schema = schemas.spec_schema()
    for scaling in ({"min": 0, "max": 3, "target_per_instance": 10,
                     "metric": {"name": "queue_length", "source": "external", "stale_s": 9}},
                    {"min": 1, "max": 3, "target_per_instance": 2.5, "tolerance": 0.2,
                     "scale_down_delay_s": 5,
                     "metric": {"name": "w:x", "source": "prometheus", "port": 9100,
                                "path": "/m", "interval_s": 1}}):
        raw = {"command": ["sleep", "1"], "scaling": scaling}
        jsonschema_rs.validate(schema, raw)
        jsonschema_rs.validate(schema, parse_job_spec(raw).to_dict())
    assert not jsonschema_rs.is_valid(schema, {"command": ["x"], "scaling": {
        "metric": {"name": "9x"}, "target_per_instance": 1}})
