from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.checker import (
    UNKNOWN,
    KvInput,
    KvModel,
    ObjectState,
    Operation,
    OpInput,
    RegisterInput,
    RegisterModel,
    Status,
    check,
    versioned_object_model,
)
from chaos.checker.models import CONFLICT, NOT_FOUND, Model, ModelBase
from chaos.checker.parsers import (
    parse_edn_kv,
    parse_edn_map,
    parse_jepsen_register_log,
    read_expected,
)

REG = RegisterModel()
KV = KvModel()
VO = versioned_object_model()


def op(
    call: float,
    ret: float | None,
    input: Any,
    output: Any = None,
    status: Status = Status.OK,
    client: int = 0,
) -> Operation:
    if ret is None and status is Status.OK:
        status = Status.UNKNOWN
    return Operation(client, call, ret, input, output, status)


def w(v: Any) -> RegisterInput:
    return RegisterInput("write", v)


def r() -> RegisterInput:
    return RegisterInput("read")


def cas(a: Any, b: Any) -> RegisterInput:
    return RegisterInput("cas", (a, b))


# ----------------------------------------------------------- hand-made histories


def test_empty_history_is_linearizable() -> None:
    assert check(REG, []).valid is True


def test_sequential_write_then_read() -> None:
    assert check(REG, [op(0, 1, w(1)), op(2, 3, r(), 1)]).valid is True


def test_stale_read_after_completed_write() -> None:
    res = check(REG, [op(0, 1, w(1)), op(2, 3, r(), None)])
    assert res.valid is False
    cex = res.counterexample
    assert cex is not None
    assert [o.input for o in cex.prefix] == [w(1)]
    assert cex.blocked is not None and cex.blocked.input == r()
    assert "read() -> None" in str(cex)


def test_lost_write() -> None:
    ops = [op(0, 1, w(1)), op(2, 3, w(2)), op(4, 5, r(), 1)]
    assert check(REG, ops).valid is False


def test_concurrent_writes_either_order() -> None:
    writes = [op(0, 10, w(1), client=1), op(1, 9, w(2), client=2)]
    assert check(REG, [*writes, op(11, 12, r(), 1)]).valid is True
    assert check(REG, [*writes, op(11, 12, r(), 2)]).valid is True
    # Reads during the writes may see both orders' intermediate states...
    during = [op(2, 3, r(), 1, client=3), op(4, 5, r(), 2, client=3)]
    assert check(REG, [*writes, *during]).valid is True
    # ...but after both completed the value cannot change back.
    after = [op(11, 12, r(), 2, client=3), op(13, 14, r(), 1, client=3)]
    assert check(REG, [*writes, *after]).valid is False


def test_unknown_write_that_must_be_taken() -> None:
    ops = [op(0, None, w(1), client=1), op(5, 6, r(), 1)]
    assert check(REG, ops).valid is True
    # Without the unknown write nothing explains the read.
    assert check(REG, ops[1:]).valid is False


def test_unknown_write_that_must_be_dropped() -> None:
    ops = [op(0, None, w(1), client=1), op(5, 6, r(), None), op(7, 8, r(), None)]
    assert check(REG, ops).valid is True


def test_unknown_write_cannot_take_effect_before_its_call() -> None:
    ops = [op(0, 1, r(), 1), op(10, None, w(1), client=1)]
    assert check(REG, ops).valid is False


def test_unknown_write_taken_then_later_value_stays() -> None:
    ops = [
        op(0, None, w(1), client=1),
        op(2, 3, r(), 1),
        op(4, 5, w(2)),
        op(6, 7, r(), 1),  # the unknown write cannot apply twice
    ]
    assert check(REG, ops).valid is False


def test_unknown_cas_only_if_compare_could_match() -> None:
    base = [op(0, 1, w(0)), op(2, None, cas(0, 5), client=1)]
    assert check(REG, [*base, op(3, 4, r(), 5)]).valid is True
    assert check(REG, [*base, op(3, 4, r(), 0)]).valid is True
    other = [op(0, 1, w(1)), op(2, None, cas(0, 5), client=1), op(3, 4, r(), 5)]
    assert check(REG, other).valid is False


def test_failed_cas_is_an_observation() -> None:
    ops = [op(0, 1, w(0)), op(2, 3, cas(0, 1), False)]
    assert check(REG, ops).valid is False
    ops = [op(0, 1, w(2)), op(2, 3, cas(0, 1), False), op(4, 5, r(), 2)]
    assert check(REG, ops).valid is True


def test_fail_ops_are_ignored() -> None:
    failed = op(0, 1, w(1), status=Status.FAIL)
    assert check(REG, [failed, op(2, 3, r(), None)]).valid is True
    assert check(REG, [failed, op(2, 3, r(), 1)]).valid is False


def test_touching_intervals_count_as_concurrent() -> None:
    # The read is called at the instant the write returns: either order is allowed.
    assert check(REG, [op(0, 1, w(1)), op(1, 2, r(), None)]).valid is True
    assert check(REG, [op(0, 1, w(1)), op(1.5, 2, r(), None)]).valid is False


def test_partitions_are_independent() -> None:
    ok_a = [op(0, 1, KvInput("put", "a", "x")), op(2, 3, KvInput("get", "a"), "x")]
    bad_b = [op(0, 1, KvInput("append", "b", "y")), op(2, 3, KvInput("get", "b"), "")]
    res = check(KV, [*ok_a, *bad_b], stop_on_violation=False)
    assert res.valid is False
    assert [p.valid for p in res.partitions] == [True, False]
    assert res.counterexample is not None and res.counterexample.partition == 1


def test_timeout_gives_unknown() -> None:
    # Many concurrent distinct writes and a read nobody wrote: exhausting the search
    # takes far longer than one time slice.
    writes = [op(0, 100, w(i), client=i) for i in range(14)]
    res = check(REG, [*writes, op(101, 102, r(), 99)], timeout_s=0)
    assert res.valid == "unknown"
    assert res.partitions[0].note == "timed out"


def test_state_limit_gives_unknown() -> None:
    writes = [op(0, 100, w(i), client=i) for i in range(14)]
    res = check(REG, [*writes, op(101, 102, r(), 99)], max_states=1000)
    assert res.valid == "unknown"
    assert res.partitions[0].note == "state limit reached"


def test_stop_on_violation_leaves_others_undecided() -> None:
    bad = [op(0, 1, KvInput("put", "a", "x")), op(2, 3, KvInput("get", "a"), "")]
    hard = [op(0, 100, KvInput("append", "b", str(i)), client=i) for i in range(14)]
    hard.append(op(101, 102, KvInput("get", "b"), "nobody wrote this"))
    res = check(KV, [*bad, *hard])
    assert res.valid is False
    assert res.partitions[1].valid == "unknown"
    assert "partition 0" in res.partitions[1].note


def test_return_before_call_is_rejected() -> None:
    with pytest.raises(ValueError):
        check(REG, [op(2, 1, w(1))])


# --------------------------------------------------------- versioned object


def vo(
    call: float,
    ret: float | None,
    name: str,
    arg: Any = None,
    out: Any = None,
    key: str = "job",
) -> Operation:
    return op(call, ret, OpInput(name, key, arg), out)


def test_versioned_object_sequential() -> None:
    ops = [
        vo(0, 1, "read", out=(False, 0, 0)),
        vo(2, 3, "create", 3, 1),
        vo(4, 5, "create", 4, CONFLICT),
        vo(6, 7, "scale", 5, 2),
        vo(8, 9, "update_if", (1, 9), CONFLICT),
        vo(10, 11, "update_if", (2, 9), 3),
        vo(12, 13, "read", out=ObjectState(True, 9, 3)),
        vo(14, 15, "delete", out=4),
        vo(16, 17, "scale", 1, NOT_FOUND),
        vo(18, 19, "read", out=(False, 0, 4)),
        vo(20, 21, "update", 2, 5),
    ]
    assert check(VO, ops).valid is True


def test_versioned_object_stale_count() -> None:
    ops = [
        vo(0, 1, "create", 3, 1),
        vo(2, 3, "scale", 5, 2),
        vo(4, 5, "read", out=(True, 3, 1)),
    ]
    res = check(VO, ops)
    assert res.valid is False
    assert res.counterexample is not None
    assert "count=5 version=2" in str(res.counterexample)


def test_versioned_object_unknown_delete_must_be_taken() -> None:
    ops = [
        vo(0, 1, "create", 3, 1),
        vo(2, None, "delete"),
        vo(5, 6, "create", 2, 3),
    ]
    assert check(VO, ops).valid is True
    assert check(VO, [ops[0], ops[2]]).valid is False


def test_versioned_object_keys_and_extra_steps() -> None:
    def restart(s: ObjectState, _arg: Any, out: Any) -> tuple[bool, ObjectState]:
        new = s._replace(version=s.version + 1) if s.exists else s
        expected = new.version if s.exists else NOT_FOUND
        return (out is UNKNOWN or out == expected), new

    model = VO.with_steps(restart=restart)
    ops = [
        vo(0, 1, "create", 1, 1, key="a"),
        vo(0, 1, "create", 1, 1, key="b"),
        vo(2, 3, "restart", out=2, key="a"),
        vo(4, 5, "read", out=(True, 1, 2), key="a"),
        vo(4, 5, "read", out=(True, 1, 1), key="b"),
    ]
    res = check(model, ops)
    assert res.valid is True and len(res.partitions) == 2
    with pytest.raises(ValueError):
        check(VO, [vo(0, 1, "restart", out=1)])


# ------------------------------------------------------------------ parsers


def test_parse_jepsen_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text(
        "INFO  jepsen.util - 0\t:invoke\t:write\t1\n"
        "INFO  jepsen.util - 1   :invoke :cas    [1 2]\n"
        "INFO  jepsen.util - 2\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 0\t:ok\t:write\t1\n"
        "INFO  jepsen.util - 2\t:fail\t:read\t:timed-out\n"
        "INFO  jepsen.util - 1\t:fail\t:cas\t[1 2]\n"
        "INFO  jepsen.util - 3\t:invoke\t:write\t4\n"
        "INFO  jepsen.util - 3\t:info\t:write\t:timed-out\n"
        "INFO  jepsen.util - 4\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 4\t:ok\t:read\t1\n"
        "INFO  jepsen.util - 5\t:invoke\t:cas\t[0 3]\n"
    )
    ops = parse_jepsen_register_log(log)
    by_client = {o.client: o for o in ops}
    assert by_client[0] == Operation(0, 0, 3, w(1), None, Status.OK)
    assert by_client[1] == Operation(1, 1, 5, cas(1, 2), False, Status.OK)
    assert by_client[2].status is Status.FAIL
    assert by_client[3] == Operation(3, 6, None, w(4), None, Status.UNKNOWN)
    assert by_client[4].output == 1
    assert by_client[5].is_unknown and by_client[5].input == cas(0, 3)
    dropped = parse_jepsen_register_log(log, failed_cas_is_observation=False)
    assert {o.client: o for o in dropped}[1].status is Status.FAIL


def test_parse_edn_kv(tmp_path: Path) -> None:
    assert parse_edn_map('{:a "x \\"q\\" y", :b nil, :c :kw, :d -3}') == {
        "a": 'x "q" y',
        "b": None,
        "c": "kw",
        "d": -3,
    }
    path = tmp_path / "h.txt"
    path.write_text(
        '{:process 0, :type :invoke, :f :append, :key "1", :value "x 0 0 y"}\n'
        '{:process 1, :type :invoke, :f :get, :key "1", :value nil}\n'
        '{:process 0, :type :ok, :f :append, :key "1", :value "x 0 0 y"}\n'
        '{:process 1, :type :ok, :f :get, :key "1", :value ""}\n'
        '{:process 2, :type :invoke, :f :put, :key "2", :value "z"}\n'
    )
    ops = parse_edn_kv(path)
    assert ops[0] == Operation(0, 0, 2, KvInput("append", "1", "x 0 0 y"), None, Status.OK)
    assert ops[1] == Operation(1, 1, 3, KvInput("get", "1"), "", Status.OK)
    assert ops[2].is_unknown and ops[2].input == KvInput("put", "2", "z")
    assert check(KV, ops).valid is True


# ------------------------------------------------------------ property tests


@st.composite
def simulated_histories(draw: st.DrawFn, model_name: str) -> tuple[Model, list[Operation]]:
    """A sequential run with each operation given an interval around its effect.

    Every operation takes effect at its own instant ``k`` (in this order); its call is
    drawn before that and its return after, so the run itself is a witness.
    """
    model: Model = REG if model_name == "register" else KV
    values = st.integers(0, 3)
    state: dict[Any, Any] = {}
    ops: list[Operation] = []
    n = draw(st.integers(0, 14))
    for k in range(n):
        t = float(k * 10)
        call = t - draw(st.integers(0, 35))
        ret = t + draw(st.integers(0, 35))
        fate = draw(st.sampled_from(["ok"] * 6 + ["fail", "lost", "unknown"]))
        if model_name == "register":
            kind = draw(st.sampled_from(["read", "write", "cas"]))
            arg = (draw(values), draw(values)) if kind == "cas" else draw(values)
            inp: Any = RegisterInput(kind, None if kind == "read" else arg)
            key: Any = None
        else:
            kind = draw(st.sampled_from(["get", "put", "append"]))
            key = draw(st.sampled_from(["a", "b"]))
            inp = KvInput(kind, key, None if kind == "get" else str(draw(values)))
        if fate in ("fail", "lost"):
            # Never took effect: reported as failed, or as unknown.
            status = Status.FAIL if fate == "fail" else Status.UNKNOWN
            ops.append(Operation(k, call, None if fate == "lost" else ret, inp, None, status))
            continue
        cur = state.get(key, model.init())
        output: Any = None
        if kind in ("read", "get"):
            output = cur
        elif kind == "cas":
            output = cur == inp.value[0]
        _ok, state[key] = model.step(cur, inp, output)
        assert _ok
        if fate == "unknown":
            ops.append(Operation(k, call, None, inp, None, Status.UNKNOWN))
        else:
            ops.append(Operation(k, call, ret, inp, output, Status.OK))
    order = draw(st.permutations(range(len(ops))))
    return model, [ops[i] for i in order]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["register", "kv"]).flatmap(simulated_histories))
def test_simulated_histories_are_linearizable(case: tuple[Model, list[Operation]]) -> None:
    model, ops = case
    res = check(model, ops)
    assert res.valid is True, res.counterexample


def brute_force(model: Model, ops: Sequence[Operation]) -> bool:
    """Linearizability by enumerating every order of every admissible subset."""
    for part in model.partition([o for o in ops if o.status is not Status.FAIL]):
        required = [o for o in part if not o.is_unknown]
        optional = [o for o in part if o.is_unknown]
        found = False
        for k in range(len(optional) + 1):
            for extra in itertools.combinations(optional, k):
                for order in itertools.permutations([*required, *extra]):
                    if _legal(model, order):
                        found = True
                        break
                if found:
                    break
            if found:
                break
        if not found:
            return False
    return True


def _legal(model: Model, order: Sequence[Operation]) -> bool:
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            # b placed after a, but b returned strictly before a was called.
            if b.ret is not None and not b.is_unknown and b.ret < a.call:
                return False
    state = model.init()
    for o in order:
        ok, state = model.step(state, o.input, UNKNOWN if o.is_unknown else o.output)
        if not ok:
            return False
    return True


class RegisterWithoutShortcuts(RegisterModel):
    def is_read_only(self, input: RegisterInput, output: Any) -> bool:
        return False


@st.composite
def random_register_histories(draw: st.DrawFn) -> list[Operation]:
    """Arbitrary (mostly not linearizable) small histories over a two-valued register."""
    ops: list[Operation] = []
    for client in range(draw(st.integers(0, 6))):
        call = draw(st.integers(0, 12))
        ret = call + draw(st.integers(0, 8))
        kind = draw(st.sampled_from(["read", "write", "cas"]))
        status = draw(st.sampled_from([Status.OK] * 4 + [Status.FAIL, Status.UNKNOWN]))
        v = draw(st.sampled_from([None, 1]))
        if kind == "read":
            inp, out = RegisterInput("read"), v
        elif kind == "write":
            inp, out = RegisterInput("write", v), None
        else:
            inp, out = RegisterInput("cas", (v, draw(st.sampled_from([None, 1])))), draw(
                st.booleans()
            )
        unknown = status is Status.UNKNOWN
        ops.append(
            Operation(client, call, None if unknown else ret, inp, None if unknown else out, status)
        )
    return ops


@settings(max_examples=500, deadline=None)
@given(random_register_histories())
def test_agrees_with_brute_force(ops: list[Operation]) -> None:
    expected = brute_force(REG, ops)
    assert check(REG, ops).valid is expected
    assert check(RegisterWithoutShortcuts(), ops).valid is expected


@st.composite
def random_object_histories(draw: st.DrawFn) -> list[Operation]:
    """Arbitrary small histories of one versioned object, outputs from a small range."""
    outputs = st.sampled_from([1, 2, 3, CONFLICT, NOT_FOUND])
    ops: list[Operation] = []
    for client in range(draw(st.integers(0, 6))):
        call = draw(st.integers(0, 12))
        ret = call + draw(st.integers(0, 8))
        name = draw(st.sampled_from(["create", "update", "update_if", "scale", "delete", "read"]))
        status = draw(st.sampled_from([Status.OK] * 4 + [Status.FAIL, Status.UNKNOWN]))
        arg: Any = draw(st.integers(0, 1))
        if name == "update_if":
            arg = (draw(st.integers(0, 2)), arg)
        elif name in ("delete", "read"):
            arg = None
        if name == "read":
            out: Any = (draw(st.booleans()), draw(st.integers(0, 1)), draw(st.integers(0, 3)))
        else:
            out = draw(outputs)
        unknown = status is Status.UNKNOWN
        ops.append(
            Operation(
                client,
                call,
                None if unknown else ret,
                OpInput(name, "job", arg),
                None if unknown else out,
                status,
            )
        )
    return ops


@settings(max_examples=300, deadline=None)
@given(random_object_histories())
def test_versioned_object_agrees_with_brute_force(ops: list[Operation]) -> None:
    expected = brute_force(VO, ops)
    assert check(VO, ops).valid is expected
    # The same search without the read-only shortcut.
    assert check(VO.with_steps(read=VO.steps["read"]), ops).valid is expected


def test_model_base_defaults() -> None:
    class Counter(ModelBase):
        def init(self) -> int:
            return 0

        def step(self, state: int, input: int, output: Any) -> tuple[bool, int]:
            return (output is UNKNOWN or output == state + input), state + input

    ops = [op(0, 1, 2, 2), op(0, 1, 3, 5)]
    assert check(Counter(), ops).valid is True
    assert check(Counter(), [op(0, 1, 2, 2), op(2, 3, 3, 3)]).valid is False


# ------------------------------------------------------- external test vectors

def _find_vectors() -> Path:
    """The shared test vectors: $HACONTROL_TESTDATA, beside the checkout, or the
    workplace's shared folder (CI clones the repository elsewhere)."""
    sub = Path("linearizability")
    candidates = [Path(os.environ["HACONTROL_TESTDATA"]) / sub] \
        if os.environ.get("HACONTROL_TESTDATA") else []
    candidates += [Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / sub,
                   Path("/work/shared/testdata") / sub]
    return next((c for c in candidates if c.is_dir()), candidates[0])


VECTORS = _find_vectors()
VECTOR_TIMEOUT_S = 60.0


def _vector_params(sub: str) -> list[Any]:
    expected = VECTORS / sub / "EXPECTED.txt"
    if not expected.is_file():
        return [pytest.param(None, None, id="missing")]
    return [
        pytest.param(name, verdict, id=name)
        for name, verdict in sorted(read_expected(expected).items())
        if verdict is not None
    ]


def _require_vectors() -> None:
    if not VECTORS.is_dir():
        reason = f"linearizability test vectors not found at {VECTORS}"
        if os.environ.get("HACONTROL_TEST_ALL") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.mark.parametrize(("name", "expected"), _vector_params("jepsen-etcd"))
def test_jepsen_etcd_vectors(name: str | None, expected: bool | None) -> None:
    _require_vectors()
    assert name is not None, "EXPECTED.txt missing"
    ops = parse_jepsen_register_log(VECTORS / "jepsen-etcd" / name)
    assert check(REG, ops, timeout_s=VECTOR_TIMEOUT_S).valid is expected


@pytest.mark.parametrize(("name", "expected"), _vector_params("kv"))
def test_kv_vectors(name: str | None, expected: bool | None) -> None:
    _require_vectors()
    assert name is not None, "EXPECTED.txt missing"
    ops = parse_edn_kv(VECTORS / "kv" / name)
    assert check(KV, ops, timeout_s=VECTOR_TIMEOUT_S).valid is expected
