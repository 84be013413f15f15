"""A job_put command spells out every section (JobSpec.to_dict); the parse of a section that
is exactly the default takes a short way. It must give what the long way gives, types
included, and nothing else may take it."""

from __future__ import annotations

from dataclasses import astuple
from typing import Any

import msgpack
import pytest

from hacontrol.model import spec_parse as P
from hacontrol.model.errors import Rejection
from hacontrol.model.spec_parse import parse_job_spec


def _as_logged(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as a replica applying the command reads it (msgpack round trip)."""
    out: dict[str, Any] = msgpack.unpackb(msgpack.packb(spec, use_bin_type=True), raw=False)
    return out


def _typed(x: object) -> list[tuple[type, object]]:
    return [(type(v), v) for v in astuple(x)]  # type: ignore[call-overload]


SECTIONS = {"resources": P._resources, "restart": P._restart, "stop": P._stop}


def test_spelled_out_defaults_are_the_shared_defaults() -> None:
    raw = _as_logged(parse_job_spec({"command": ["sleep", "1"]}).to_dict())
    spec = parse_job_spec(raw)
    assert spec.resources is P._DEFAULT_RESOURCES
    assert spec.restart is P._DEFAULT_RESTART
    assert spec.stop is P._DEFAULT_STOP
    for name, long_way in SECTIONS.items():
        assert _typed(getattr(spec, name)) == _typed(long_way(raw[name]))


@pytest.mark.parametrize("name,key,value", [
    ("restart", "window_s", 60),          # an int for the default float: stays an int
    ("restart", "max_restarts", 5.0),     # a float for the default int: refused
    ("restart", "max_restarts", 6),
    ("restart", "policy", "always"),
    ("stop", "timeout_s", 5),
    ("stop", "signal", "sigterm"),        # upper-cased by the long way
    ("resources", "cpu", 0.2),
    ("resources", "memory_mb", 64.0),     # refused: not an integer
    ("resources", "memory_mb", True),     # refused: a bool is not a number here
])
def test_anything_but_the_exact_default_takes_the_long_way(name: str, key: str,
                                                          value: object) -> None:
    raw = _as_logged(parse_job_spec({"command": ["sleep", "1"]}).to_dict())
    raw[name][key] = value
    try:
        want = _typed(SECTIONS[name](raw[name]))
    except Rejection as exc:
        with pytest.raises(Rejection) as got:
            parse_job_spec(raw)
        assert got.value.field == exc.field
        return
    assert _typed(getattr(parse_job_spec(raw), name)) == want


def test_keys_in_another_order_give_the_same_section() -> None:
    raw = _as_logged(parse_job_spec({"command": ["sleep", "1"]}).to_dict())
    raw["restart"] = dict(reversed(list(raw["restart"].items())))
    assert _typed(parse_job_spec(raw).restart) == _typed(P._DEFAULT_RESTART)
