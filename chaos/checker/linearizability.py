"""Linearizability checking of recorded histories (Wing & Gong search, Lowe's memoisation).

The search follows the scheme popularised by Porcupine: per partition, the call and
return events are put in a doubly linked list ordered by time. Walking the list, a call
event is a candidate to linearize next: if the model accepts it, and the pair
(set of linearized operations, model state) has not been seen before, the operation is
"lifted" out of the list and the walk restarts from the head. Reaching a return event
means that operation's deadline passed while it was still unlinearized, so the last
choice is undone (the operation is put back) and the walk continues after it. The
memo set is what makes large histories tractable: two interleavings that linearize the
same operations into the same state have the same future, so only one is explored.

Operation outcomes:

- ``ok``: completed; it must be linearized between its call and return.
- ``fail``: definitely did not take effect; it is dropped before the search.
- ``unknown`` (or ``ret is None``): it may have taken effect at any time after its call,
  or never. Its return is placed at +infinity, so it never forces a backtrack; the model
  sees ``UNKNOWN`` as its output. The history is linearizable once every ``ok``
  operation is linearized; unknown ones left over are taken never to have happened.

Ties: when a call and a return carry the same timestamp, the call is ordered first, so
the two operations count as concurrent. Clocks of limited resolution can make a real
overlap look like a touch, and treating touching intervals as ordered could report a
violation that did not happen; treating them as concurrent can only hide a violation
that lies entirely within one clock tick.

Read-only operations (the optional ``model.is_read_only(input, output)``: the operation
leaves every state in which it is accepted unchanged, e.g. a read, a failed
compare-and-set) are linearized greedily, without branching. Suppose the walk reaches
the call of such an operation r (so everything that returned before r was called is
linearized already) and the model accepts r now. Any valid completion from here places
r at some later point where it is an identity too; moving r to the front keeps every
other operation's state and real-time order, and "now" lies inside r's interval. So if
linearizing r now leads nowhere, nothing from the current point does. With k pending
concurrent reads this replaces 2^k explored subsets by one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Hashable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from chaos.checker.models import UNKNOWN, Model


class Status(StrEnum):
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Operation:
    client: int
    call: float
    ret: float | None
    input: Any
    output: Any = None
    status: Status = Status.OK

    @property
    def is_unknown(self) -> bool:
        return self.status is Status.UNKNOWN or self.ret is None


Verdict = bool | Literal["unknown"]


@dataclass(frozen=True)
class Counterexample:
    """Where the search got furthest in a partition that is not linearizable.

    ``prefix`` is the longest sequence of operations found that linearizes (in
    linearization order); ``state`` is the model state after it; ``blocked`` is an
    operation that completed but could not be placed after that prefix.
    """

    partition: int
    prefix: tuple[Operation, ...]
    state: Hashable
    blocked: Operation | None
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class PartitionResult:
    index: int
    valid: Verdict
    operations: int
    unknown_operations: int
    states_explored: int
    elapsed_s: float
    counterexample: Counterexample | None = None
    # Why an undecided ("unknown") partition was left undecided.
    note: str = ""


@dataclass(frozen=True)
class CheckResult:
    valid: Verdict
    partitions: list[PartitionResult] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def counterexample(self) -> Counterexample | None:
        for p in self.partitions:
            if p.counterexample is not None:
                return p.counterexample
        return None


# Search iterations per time slice. Partitions are searched round-robin in slices so
# that an easy violation in one is found even while another is hard (the verdict needs
# only one), and so the deadline is looked at without reading the clock every step.
_SLICE = 4096

_Search = Generator[None, None, PartitionResult]


def _search_partition(
    model: Model, ops: Sequence[Operation], index: int, max_states: int | None
) -> _Search:
    """Decide one partition, yielding every ``_SLICE`` iterations.

    ``elapsed_s`` of the result is left at 0: the scheduler knows the time spent.
    """
    ops = [op for op in ops if op.status is not Status.FAIL]
    n = len(ops)
    n_unknown = sum(1 for op in ops if op.is_unknown)
    if n == 0:
        return PartitionResult(index, True, 0, 0, 0, 0.0)

    for op in ops:
        if op.ret is not None and not op.ret >= op.call:
            raise ValueError(f"operation returns before it is called: {op!r}")
    inputs = [op.input for op in ops]
    outputs = [UNKNOWN if op.is_unknown else op.output for op in ops]

    # Entries 1..2n; 0 is the head sentinel, 2n+1 the tail sentinel.
    events: list[tuple[float, int, int]] = []
    for i, op in enumerate(ops):
        events.append((op.call, 0, i))
        ret_time = math.inf if op.is_unknown or op.ret is None else float(op.ret)
        events.append((ret_time, 1, i))
    # kind 0 (call) sorts before kind 1 (return) at equal times: see the module docstring.
    events.sort()
    size = 2 * n + 2
    tail = size - 1
    op_of = [0] * size
    partner = [0] * size  # call entry -> its return entry
    call_entry = [0] * n
    is_call = [False] * size
    for pos, (_t, kind, i) in enumerate(events, start=1):
        op_of[pos] = i
        if kind == 0:
            is_call[pos] = True
            call_entry[i] = pos
        else:
            partner[call_entry[i]] = pos
    nxt = list(range(1, size + 1))
    prv = list(range(-1, size - 1))
    # An unknown operation's return sits at +inf; reaching one means every operation
    # still in the list is unknown, so everything that had to be linearized was.
    unknown_ret = [False] * size
    for pos in range(1, tail):
        if not is_call[pos] and ops[op_of[pos]].is_unknown:
            unknown_ret[pos] = True

    step = model.step
    read_only_fn = getattr(model, "is_read_only", None)
    read_only = [
        read_only_fn is not None and bool(read_only_fn(inputs[i], outputs[i])) for i in range(n)
    ]
    state: Any = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any, bool]] = []  # (call entry, state before it, read-only)
    best_depth = -1
    best_prefix: list[int] = []
    best_state: Any = state
    best_blocked: int | None = None
    iterations = 0
    failed = False

    entry = nxt[0]
    while entry != tail and not unknown_ret[entry]:
        iterations += 1
        if iterations == _SLICE:
            iterations = 0
            if max_states is not None and len(seen) > max_states:
                return PartitionResult(
                    index, "unknown", n, n_unknown, len(seen), 0.0, note="state limit reached"
                )
            yield
        if is_call[entry]:
            i = op_of[entry]
            ok, new_state = step(state, inputs[i], outputs[i])
            if not ok:
                entry = nxt[entry]
                continue
            new_linearized = linearized | (1 << i)
            key = (new_linearized, new_state)
            if key not in seen:
                seen.add(key)
                stack.append((entry, state, read_only[i]))
                state = new_state
                linearized = new_linearized
                # Lift the call and its return out of the list.
                ret = partner[entry]
                p, q = prv[entry], nxt[entry]
                nxt[p] = q
                prv[q] = p
                p, q = prv[ret], nxt[ret]
                nxt[p] = q
                prv[q] = p
                entry = nxt[0]
                continue
            if not read_only[i]:
                entry = nxt[entry]
                continue
            # A read-only operation placed here was already explored from this point and
            # failed; by dominance (module docstring) so does this point.
        elif len(stack) > best_depth:
            best_depth = len(stack)
            best_prefix = [e for e, _, _ in stack]
            best_state = state
            best_blocked = op_of[entry]
        # Backtrack. A read-only choice dominates its alternatives, so when it fails the
        # choice below it fails too and the alternatives at its level are skipped.
        while True:
            if not stack:
                failed = True
                break
            entry, state, forced = stack.pop()
            linearized &= ~(1 << op_of[entry])
            # Unlift in reverse order of lifting, so the neighbours' links are intact.
            ret = partner[entry]
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not forced:
                break
        if failed:
            break
        entry = nxt[entry]

    if not failed:
        return PartitionResult(index, True, n, n_unknown, len(seen), 0.0)

    best_prefix = [op_of[e] for e in best_prefix]
    cex = _counterexample(model, ops, index, best_prefix, best_state, best_blocked)
    return PartitionResult(index, False, n, n_unknown, len(seen), 0.0, cex)


def _counterexample(
    model: Model,
    ops: list[Operation],
    index: int,
    prefix: list[int],
    state: Any,
    blocked: int | None,
) -> Counterexample:
    def show(op: Operation) -> str:
        out = UNKNOWN if op.is_unknown else op.output
        ret = "?" if op.ret is None else f"{op.ret:g}"
        return (
            f"client {op.client} [{op.call:g}, {ret}] "
            f"{model.describe_operation(op.input, out)}"
        )

    lines = [
        f"partition {index}: not linearizable; longest linearizable prefix "
        f"({len(prefix)} of {len(ops)} operations):"
    ]
    lines += [f"  {k + 1}. {show(ops[i])}" for k, i in enumerate(prefix)]
    lines.append(f"  state after prefix: {model.describe_state(state)}")
    if blocked is not None:
        lines.append(f"  returned before it could be linearized: {show(ops[blocked])}")
    return Counterexample(
        partition=index,
        prefix=tuple(ops[i] for i in prefix),
        state=state,
        blocked=None if blocked is None else ops[blocked],
        text="\n".join(lines),
    )


def check(
    model: Model,
    ops: Sequence[Operation],
    timeout_s: float | None = None,
    *,
    stop_on_violation: bool = True,
    max_states: int | None = None,
) -> CheckResult:
    """Check ``ops`` against ``model``; ``valid`` is True, False or "unknown" (timeout).

    Partitions are independent and are searched round-robin in slices. A violation in
    one decides the verdict even if others are undecided; with ``stop_on_violation``
    (the default) the search ends there and the undecided partitions are reported as
    "unknown" with a note, otherwise every partition is searched to the end (or until
    the deadline). ``max_states`` bounds the memo set of each partition (roughly 200 bytes
    per state plus the state itself); a partition reaching it is "unknown".
    """
    started = time.monotonic()
    deadline = None if timeout_s is None else started + timeout_s
    parts = model.partition(list(ops))
    searches: dict[int, _Search] = {
        i: _search_partition(model, part, i, max_states) for i, part in enumerate(parts)
    }
    spent = [0.0] * len(parts)
    done: dict[int, PartitionResult] = {}
    note = ""
    while searches and not note:
        for i in list(searches):
            t0 = time.monotonic()
            try:
                next(searches[i])
            except StopIteration as finished:
                t1 = time.monotonic()
                spent[i] += t1 - t0
                done[i] = replace(finished.value, elapsed_s=spent[i])
                del searches[i]
                if stop_on_violation and done[i].valid is False:
                    note = f"not finished: partition {i} is not linearizable"
                    break
            else:
                t1 = time.monotonic()
                spent[i] += t1 - t0
            if deadline is not None and t1 > deadline:
                note = "timed out"
                break
    for i in searches:
        searches[i].close()
        live = [op for op in parts[i] if op.status is not Status.FAIL]
        n_unknown = sum(1 for op in live if op.is_unknown)
        done[i] = PartitionResult(i, "unknown", len(live), n_unknown, 0, spent[i], note=note)
    results = [done[i] for i in range(len(parts))]
    verdicts = [r.valid for r in results]
    valid: Verdict
    if False in verdicts:
        valid = False
    elif "unknown" in verdicts:
        valid = "unknown"
    else:
        valid = True
    return CheckResult(valid, results, time.monotonic() - started)
