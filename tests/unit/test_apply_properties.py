"""Property tests of `apply` over garbled input: it never raises, never marks the replica
broken, and a rejected command changes nothing (but the applied index and, when it carried
an idempotency key, the idempotency table)."""

from __future__ import annotations

import os
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hacontrol.state import commands as C
from hacontrol.state.machine import StateMachine

from . import state_scenario

VALID: list[tuple[str, dict[str, Any]]] = []
BASE = state_scenario.run(VALID).snapshot()
_BASE_MACHINE = StateMachine()
_BASE_MACHINE.restore(BASE)
ALLOC_IDS = sorted(_BASE_MACHINE.allocs)
NAMES = ["team", "default", "web", "db", "setup", "n1", "n2", "n3", "nope", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(NAMES + ALLOC_IDS + list(C.OPS)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.binary(max_size=4),
                                  st.sampled_from(["command", "name", "id", "state", "spec",
                                                   "health", "env", "type", "node"])),
                        inner, max_size=4)),
    max_leaves=12)

# Argument names each operation reads, so garbled values land where handlers look.
ARG_KEYS = ["name", "namespace", "spec", "count", "quota", "cpu", "memory_mb", "address",
            "labels", "attributes", "status", "placements", "evictions", "node", "updates",
            "enable", "deadline_s", "allocations", "reason", "version", "start", "stop",
            "message", "source"]


def _paths(valid: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a nested structure: each map, list and leaf."""
    out = [at]
    if isinstance(valid, dict):
        for k, v in valid.items():
            out += _paths(v, (*at, k))
    elif isinstance(valid, list):
        for i, v in enumerate(valid):
            out += _paths(v, (*at, i))
    return out


def _replace(valid: Any, path: tuple[Any, ...], new: Any, add_key: Any) -> Any:
    if not path:
        if add_key is not None and isinstance(valid, dict):
            return {**valid, add_key: new}
        return new
    head, rest = path[0], path[1:]
    if isinstance(valid, dict):
        return {**valid, head: _replace(valid[head], rest, new, add_key)}
    copy = list(valid)
    copy[head] = _replace(valid[head], rest, new, add_key)
    return copy


def _garble(valid: Any) -> st.SearchStrategy[Any]:
    """`valid` with one place (chosen uniformly) replaced by anything, or a key (possibly
    a byte string: msgpack maps may have them) added to one of its maps."""
    maps = [p for p in _paths(valid) if isinstance(_at(valid, p), dict)]
    return st.one_of(
        st.builds(_replace, st.just(valid), st.sampled_from(_paths(valid)), values,
                  st.none()),
        st.builds(_replace, st.just(valid), st.sampled_from(maps), values,
                  st.one_of(st.binary(max_size=3), st.text(max_size=3))))


def _at(valid: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        valid = valid[p]
    return valid


def _spec_like() -> st.SearchStrategy[Any]:
    return st.one_of(*[_garble(s) for s in state_scenario.SPECS])


def _update_like() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": st.sampled_from(ALLOC_IDS + ["x"])},
        optional={k: values for k in ("state", "pid", "restarts", "exit_code", "health",
                                      "signal", "message", "reason")})


args_strategy = st.one_of(
    st.dictionaries(st.sampled_from(ARG_KEYS), values, max_size=6),
    st.fixed_dictionaries({"namespace": st.sampled_from(NAMES), "name": st.sampled_from(NAMES),
                           "spec": _spec_like()}),
    st.fixed_dictionaries({"node": st.sampled_from(NAMES),
                           "updates": st.lists(_update_like(), max_size=3)}),
    st.fixed_dictionaries({"placements": st.lists(st.lists(st.sampled_from(ALLOC_IDS + NAMES),
                                                           min_size=1, max_size=3),
                                                  max_size=3),
                           "evictions": st.one_of(st.none(), values)}),
)

garbled_valid = st.sampled_from(VALID).flatmap(
    lambda c: st.builds(lambda args: msgpack.packb({"op": c[0], "ts": 5000.0, "idem": None,
                                                    "args": args}, use_bin_type=True),
                        _garble(c[1])))

frames = st.one_of(
    st.binary(max_size=64),
    values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    st.builds(lambda op, ts, idem, args: msgpack.packb(
        {"op": op, "ts": ts, "idem": idem, "args": args}, use_bin_type=True),
        st.one_of(st.sampled_from(sorted(C.OPS)), values),
        st.one_of(st.floats(0, 1e10), values), st.one_of(st.none(), st.just("key"), values),
        st.one_of(args_strategy, values)),
)


def _state(m: StateMachine) -> dict[str, Any]:
    d: dict[str, Any] = msgpack.unpackb(m.snapshot(), raw=False)
    d.pop("index")
    d.pop("idempotency")
    return d


def _check(raw: bytes) -> None:
    m, twin = StateMachine(), StateMachine()
    m.restore(BASE)
    twin.restore(BASE)
    before = _state(m)
    result = m.apply(raw, m.index + 1)
    assert m.broken is None, result
    assert isinstance(result, dict) and isinstance(result.get("ok"), bool)
    if not result["ok"]:
        assert result["error"]["code"] != "internal"
        assert _state(m) == before
    # Deterministic: another replica applying the same entry gets the same everything.
    assert twin.apply(raw, twin.index + 1) == result
    assert twin.digest() == m.digest()


# `make test` runs a fifth of the garbled commands (about 10 s); `make fuzz` the full 3,000.
GARBLED_EXAMPLES = int(os.environ.get("HACONTROL_APPLY_EXAMPLES", "600"))


@settings(max_examples=GARBLED_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(garbled_valid)
def test_garbled_valid_commands_never_raise_nor_half_apply(raw: bytes) -> None:
    _check(raw)


@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(frames)
def test_random_frames_never_raise_nor_half_apply(raw: bytes) -> None:
    _check(raw)
