"""The sequential specification of the control plane, as the workload exercises it.

One state per namespace: its process quota and its jobs (spec id, count, version). Quota
decisions depend on every job of the namespace, so the namespace, not the job, is the unit
of linearizability. The rules mirror `hacontrol/state/machine.py` for a cluster without
nodes (allocations are never placed, so a deleted job disappears at once).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, NamedTuple

from .checker.linearizability import Operation, Status
from .checker.models import UNKNOWN, ModelBase, StepResult, partition_by
from .history import FAIL, OK, Op

# state: (quota or None, ((job, spec, count, version), ...) sorted by job)
State = tuple[int | None, tuple[tuple[str, int, int, int], ...]]


class NsInput(NamedTuple):
    ns: str
    f: str
    job: str = ""
    spec: int = 0
    count: int = 0
    quota: int = 0


def _jobs(state: State) -> dict[str, tuple[int, int, int]]:
    return {j: (s, c, v) for j, s, c, v in state[1]}


def _state(quota: int | None, jobs: dict[str, tuple[int, int, int]]) -> State:
    return (quota, tuple(sorted((j, s, c, v) for j, (s, c, v) in jobs.items())))


def _fits(quota: int | None, usage: int) -> bool:
    return quota is None or usage <= quota


class ControlPlaneModel(ModelBase):
    def init(self) -> Hashable:
        return (None, ())

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        return partition_by(ops, lambda i: i.ns)

    def step(self, state: Any, input: NsInput, output: Any) -> StepResult:
        quota, _ = state
        jobs = _jobs(state)
        unknown = output is UNKNOWN
        f = input.f
        if f == "read_job":
            cur = jobs.get(input.job)
            want = ({"exists": False} if cur is None else
                    {"exists": True, "spec": cur[0], "count": cur[1], "version": cur[2]})
            return (unknown or output == want, state)
        if f == "read_ns":
            usage = sum(c for _, c, _ in jobs.values())
            return (unknown or (output.get("quota") == quota and output.get("usage") == usage),
                    state)
        if f == "put_quota":
            usage = sum(c for _, c, _ in jobs.values())
            if usage > input.quota:
                return (unknown or output == "quota_exceeded", state)
            return (unknown or output == "ok", _state(input.quota, jobs))
        if f == "delete":
            if input.job not in jobs:
                return (unknown or output == "not_found", state)
            del jobs[input.job]
            return (unknown or output == "ok", _state(quota, jobs))
        others = sum(c for j, (_, c, _) in jobs.items() if j != input.job)
        cur = jobs.get(input.job)
        if f == "scale":
            if cur is None:
                return (unknown or output == "not_found", state)
            if cur[1] == input.count:
                return (unknown or output == {"version": cur[2], "count": cur[1]}, state)
            if not _fits(quota, others + input.count):
                return (unknown or output == "quota_exceeded", state)
            jobs[input.job] = (cur[0], input.count, cur[2])
            return (unknown or output == {"version": cur[2], "count": input.count},
                    _state(quota, jobs))
        if f == "put_job":
            if cur is not None and cur[0] == input.spec and cur[1] == input.count:
                return (unknown or output == {"version": cur[2], "count": cur[1]}, state)
            if not _fits(quota, others + input.count):
                return (unknown or output == "quota_exceeded", state)
            version = 1 if cur is None else cur[2] + (0 if cur[0] == input.spec else 1)
            jobs[input.job] = (input.spec, input.count, version)
            return (unknown or output == {"version": version, "count": input.count},
                    _state(quota, jobs))
        return (False, state)

    def describe_operation(self, input: NsInput, output: Any) -> str:
        args = {"read_job": f"{input.job}", "read_ns": "",
                "put_quota": f"processes={input.quota}", "delete": input.job,
                "scale": f"{input.job} count={input.count}",
                "put_job": f"{input.job} spec={input.spec} count={input.count}"}[input.f]
        return f"{input.ns}.{input.f}({args}) -> {output!r}"

    def describe_state(self, state: Any) -> str:
        quota, jobs = state
        inner = ", ".join(f"{j}: spec {s} x{c} v{v}" for j, s, c, v in jobs)
        return f"quota={quota} {{{inner}}}"


def to_checker_ops(ops: list[Op]) -> list[Operation]:
    out = []
    for op in ops:
        if op.status == FAIL:
            continue
        i = op.input
        inp = NsInput(op.key, op.f, i.get("job", ""), i.get("spec", 0), i.get("count", 0),
                      i.get("quota", 0))
        status = Status.OK if op.status == OK else Status.UNKNOWN
        out.append(Operation(client=op.client, call=op.invoke,
                             ret=op.complete if status is Status.OK else None, input=inp,
                             output=op.output if status is Status.OK else UNKNOWN,
                             status=status))
    return out
