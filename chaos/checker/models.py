"""Sequential specifications for the linearizability checker.

A model is a deterministic state machine: ``step(state, input, output)`` says whether
``output`` is a possible answer to ``input`` in ``state`` and which state follows.
States must be hashable, because the checker memoises (linearized set, state) pairs.

For an operation whose outcome is unknown the checker passes ``UNKNOWN`` as the output.
``step`` must then answer "could this operation have *taken effect* here, and with what
effect". The alternative, that it never took effect, is covered by the checker leaving
the operation out, so a model never has to return several possible successor states
(e.g. an unknown compare-and-set only needs its "it succeeded" branch).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    from chaos.checker.linearizability import Operation


class _Unknown:
    """Marker for an output that was never observed (timeout, crash, lost reply)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        # Keeps the singleton a singleton across pickling (identity checks rely on it).
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()

StepResult = tuple[bool, Hashable]


@runtime_checkable
class Model(Protocol):
    """What the checker needs from a sequential specification."""

    def init(self) -> Hashable: ...

    def step(self, state: Any, input: Any, output: Any) -> StepResult: ...

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]: ...

    def describe_operation(self, input: Any, output: Any) -> str: ...

    def describe_state(self, state: Any) -> str: ...


# Optional, looked up with getattr by the checker:
#   is_read_only(input, output) -> bool
# True when the operation leaves every state in which the model accepts it unchanged.
# It lets the search linearize such operations greedily; answering False is always safe.


def partition_by(
    ops: Sequence[Operation], key: Callable[[Any], Hashable]
) -> list[list[Operation]]:
    """Split a history by ``key(op.input)``, keeping the original order inside each part.

    Linearizability is local (Herlihy & Wing): a history over independent objects is
    linearizable iff each object's sub-history is, so partitions can be checked alone.
    """
    parts: dict[Hashable, list[Operation]] = {}
    for op in ops:
        parts.setdefault(key(op.input), []).append(op)
    return list(parts.values())


class ModelBase:
    """Defaults for the optional parts of :class:`Model`."""

    def init(self) -> Hashable:
        raise NotImplementedError

    def step(self, state: Any, input: Any, output: Any) -> StepResult:
        raise NotImplementedError

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return [list(ops)]

    def is_read_only(self, input: Any, output: Any) -> bool:
        return False

    def describe_operation(self, input: Any, output: Any) -> str:
        return f"{input!r} -> {output!r}"

    def describe_state(self, state: Any) -> str:
        return repr(state)


# ---------------------------------------------------------------- register


class RegisterInput(NamedTuple):
    """``op`` is read / write / cas; for cas ``value`` is ``(expected, new)``.

    Outputs: read -> the value read (None = empty), write -> ignored, cas -> bool
    (True when the compare matched and the write happened).
    """

    op: str
    value: Any = None
    key: Hashable = None


@dataclass(frozen=True)
class RegisterModel(ModelBase):
    """A compare-and-set register (one per ``key``), initially ``initial``."""

    initial: Hashable = None

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, input: RegisterInput, output: Any) -> StepResult:
        op = input.op
        if op == "read":
            return (output is UNKNOWN or output == state), state
        if op == "write":
            return True, input.value
        if op == "cas":
            expected, new = input.value
            if output is UNKNOWN or output is True:
                return (state == expected), (new if state == expected else state)
            # A failed compare is an observation: the register held something else.
            return (state != expected), state
        raise ValueError(f"unknown register operation {op!r}")

    def is_read_only(self, input: RegisterInput, output: Any) -> bool:
        return input.op == "read" or (input.op == "cas" and output is False)

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return partition_by(ops, lambda inp: inp.key)

    def describe_operation(self, input: RegisterInput, output: Any) -> str:
        where = "" if input.key is None else f"[{input.key!r}]"
        if input.op == "read":
            return f"read{where}() -> {output!r}"
        if input.op == "write":
            return f"write{where}({input.value!r})"
        expected, new = input.value
        return f"cas{where}({expected!r}, {new!r}) -> {output!r}"


# ---------------------------------------------------------------------- kv


class KvInput(NamedTuple):
    """``op`` is get / put / append. Outputs: get -> the string ("" when absent)."""

    op: str
    key: Hashable
    value: str | None = None


@dataclass(frozen=True)
class KvModel(ModelBase):
    """Per-key string values with get / put / append, as in Porcupine's kv tests."""

    def init(self) -> Hashable:
        return ""

    def step(self, state: str, input: KvInput, output: Any) -> StepResult:
        op = input.op
        if op == "get":
            return (output is UNKNOWN or output == state), state
        if op == "put":
            return True, input.value
        if op == "append":
            return True, state + (input.value or "")
        raise ValueError(f"unknown kv operation {op!r}")

    def is_read_only(self, input: KvInput, output: Any) -> bool:
        return input.op == "get"

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return partition_by(ops, lambda inp: inp.key)

    def describe_operation(self, input: KvInput, output: Any) -> str:
        if input.op == "get":
            return f"get({input.key!r}) -> {output!r}"
        return f"{input.op}({input.key!r}, {input.value!r})"

    def describe_state(self, state: str) -> str:
        return repr(state)


# ------------------------------------------------------ table-driven models


class OpInput(NamedTuple):
    """Input of a :class:`TableModel` operation on object ``key``."""

    op: str
    key: Hashable
    arg: Any = None


# (state, arg, output) -> (ok, new state); output may be UNKNOWN.
StepFn = Callable[[Any, Any, Any], StepResult]


@dataclass(frozen=True)
class TableModel(ModelBase):
    """A per-key model assembled from one step function per operation name.

    Lets a test suite grow the API surface it checks (add an op = add an entry) without
    writing a new model class.
    """

    name: str
    initial: Hashable
    steps: Mapping[str, StepFn]
    state_formatter: Callable[[Any], str] = field(default=repr)
    # See is_read_only in the Model notes; None means "no operation is read-only".
    read_only: Callable[[OpInput, Any], bool] | None = None

    def init(self) -> Hashable:
        return self.initial

    def step(self, state: Any, input: OpInput, output: Any) -> StepResult:
        try:
            fn = self.steps[input.op]
        except KeyError:
            raise ValueError(f"{self.name}: unknown operation {input.op!r}") from None
        return fn(state, input.arg, output)

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return partition_by(ops, lambda inp: inp.key)

    def is_read_only(self, input: OpInput, output: Any) -> bool:
        return self.read_only is not None and self.read_only(input, output)

    def describe_operation(self, input: OpInput, output: Any) -> str:
        arg = "" if input.arg is None else repr(input.arg)
        return f"{input.op}[{input.key!r}]({arg}) -> {output!r}"

    def describe_state(self, state: Any) -> str:
        return self.state_formatter(state)

    def with_steps(self, **extra: StepFn) -> TableModel:
        # Replacing an existing operation may invalidate the read-only predicate, which
        # was written for the old one; dropping it is always sound.
        read_only = None if set(extra) & set(self.steps) else self.read_only
        return TableModel(
            self.name, self.initial, {**self.steps, **extra}, self.state_formatter, read_only
        )


# ---------------------------------------------------------- versioned object


class ObjectState(NamedTuple):
    exists: bool
    count: int
    version: int


NOT_FOUND: Final = "not_found"
CONFLICT: Final = "conflict"


def _observed(output: Any, expected: Any) -> bool:
    return output is UNKNOWN or output == expected


def _vo_create(s: ObjectState, count: int, output: Any) -> StepResult:
    if s.exists:
        return _observed(output, CONFLICT), s
    new = ObjectState(True, count, s.version + 1)
    return _observed(output, new.version), new


def _vo_update(s: ObjectState, count: int, output: Any) -> StepResult:
    # Upsert of a spec, as a job register does: always succeeds, bumps the version.
    new = ObjectState(True, count, s.version + 1)
    return _observed(output, new.version), new


def _vo_update_if(s: ObjectState, arg: tuple[int, int], output: Any) -> StepResult:
    expected_version, count = arg
    if not s.exists or s.version != expected_version:
        return _observed(output, CONFLICT), s
    new = ObjectState(True, count, s.version + 1)
    return _observed(output, new.version), new


def _vo_scale(s: ObjectState, count: int, output: Any) -> StepResult:
    if not s.exists:
        return _observed(output, NOT_FOUND), s
    new = ObjectState(True, count, s.version + 1)
    return _observed(output, new.version), new


def _vo_delete(s: ObjectState, _arg: Any, output: Any) -> StepResult:
    if not s.exists:
        return _observed(output, NOT_FOUND), s
    # The version survives deletion so a re-created object is never confused with the
    # one that was deleted.
    new = ObjectState(False, 0, s.version + 1)
    return _observed(output, new.version), new


_VO_REJECTIONS: Final = {
    "create": CONFLICT,
    "update_if": CONFLICT,
    "scale": NOT_FOUND,
    "delete": NOT_FOUND,
}


def _vo_read_only(input: OpInput, output: Any) -> bool:
    # Reads, and built-in writes that report a rejection, never change the state.
    if input.op == "read":
        return True
    rejection = _VO_REJECTIONS.get(input.op)
    return rejection is not None and output is not UNKNOWN and output == rejection


def _vo_read(s: ObjectState, _arg: Any, output: Any) -> StepResult:
    if output is UNKNOWN:
        return True, s
    return (isinstance(output, tuple | list) and tuple(output) == s), s


def versioned_object_model(extra_steps: Mapping[str, StepFn] | None = None) -> TableModel:
    """Keys (e.g. jobs) holding ``ObjectState(exists, count, version)``.

    Operations (``OpInput(op, key, arg)`` -> output):

    - ``create(count)`` -> new version, or ``CONFLICT`` if it exists;
    - ``update(count)`` -> new version (upsert);
    - ``update_if((expected_version, count))`` -> new version, or ``CONFLICT``;
    - ``scale(count)`` -> new version, or ``NOT_FOUND``;
    - ``delete()`` -> new version, or ``NOT_FOUND``;
    - ``read()`` -> ``(exists, count, version)``.

    Versions count successful writes to the key from 0, so they must be per-key
    counters in the system under test (or be mapped to them by the history recorder).
    """
    steps: dict[str, StepFn] = {
        "create": _vo_create,
        "update": _vo_update,
        "update_if": _vo_update_if,
        "scale": _vo_scale,
        "delete": _vo_delete,
        "read": _vo_read,
    }
    # The read-only predicate describes the built-in operations only.
    overridden = bool(extra_steps and set(extra_steps) & set(steps))
    if extra_steps:
        steps.update(extra_steps)
    return TableModel(
        name="versioned_object",
        initial=ObjectState(False, 0, 0),
        steps=steps,
        state_formatter=lambda s: f"exists={s.exists} count={s.count} version={s.version}",
        read_only=None if overridden else _vo_read_only,
    )
