"""Readers for externally recorded histories (Jepsen etcd logs, Porcupine kv EDN files).

Neither format carries timestamps, so the line number is used as the time: an event
on a later line happened later, which is all real-time order needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.checker.linearizability import Operation, Status
from chaos.checker.models import KvInput, RegisterInput


@dataclass
class _Pending:
    call: float
    f: str
    value: Any


# ------------------------------------------------------------ Jepsen etcd logs

_JEPSEN_LINE = re.compile(r"jepsen\.util\s+-\s+(\d+)\s+:(\w+)\s+:(\w+)\s*(.*?)\s*$")


def _jepsen_value(text: str) -> Any:
    if text in ("", "nil"):
        return None
    if text.startswith("[") and text.endswith("]"):
        return tuple(_jepsen_value(part) for part in text[1:-1].split())
    if text.startswith(":"):
        return text  # a keyword such as :timed-out
    return int(text)


def parse_jepsen_register_log(
    path: str | Path, *, failed_cas_is_observation: bool = True
) -> list[Operation]:
    """Operations on one compare-and-set register from a Jepsen ``jepsen.util`` log.

    ``:fail :cas`` means the compare did not match; by default that is kept as an
    observation (a cas returning False, which constrains the register's value) rather
    than dropped, which is what Jepsen's own register model does too. ``:info`` and
    invocations left open at the end are unknown. ``:fail`` of a read or write is
    dropped: it did not take effect (a read has no effect anyway).
    """
    ops: list[Operation] = []
    pending: dict[int, _Pending] = {}
    lines = Path(path).read_text().splitlines()
    for t, line in enumerate(lines):
        m = _JEPSEN_LINE.search(line)
        if m is None:
            continue
        process, kind, f, raw = int(m[1]), m[2], m[3], m[4]
        value = _jepsen_value(raw)
        if kind == "invoke":
            if process in pending:
                raise ValueError(f"{path}:{t + 1}: process {process} invoked twice")
            pending[process] = _Pending(float(t), f, value)
            continue
        start = pending.pop(process, None)
        if start is None:
            raise ValueError(f"{path}:{t + 1}: completion without invocation")
        inp = RegisterInput(f, start.value)
        if kind == "ok":
            output: Any = {"read": value, "write": None, "cas": True}[f]
            ops.append(Operation(process, start.call, float(t), inp, output, Status.OK))
        elif kind == "fail" and f == "cas" and failed_cas_is_observation:
            ops.append(Operation(process, start.call, float(t), inp, False, Status.OK))
        elif kind == "fail":
            ops.append(Operation(process, start.call, float(t), inp, None, Status.FAIL))
        elif kind == "info":
            ops.append(Operation(process, start.call, None, inp, None, Status.UNKNOWN))
        else:
            raise ValueError(f"{path}:{t + 1}: unknown event type {kind!r}")
    for process, start in pending.items():
        inp = RegisterInput(start.f, start.value)
        ops.append(Operation(process, start.call, None, inp, None, Status.UNKNOWN))
    return ops


# ------------------------------------------------------------- EDN kv histories

_EDN_PAIR = re.compile(r':([\w-]+)\s+("(?:[^"\\]|\\.)*"|nil|true|false|:[\w-]+|-?\d+)')
_EDN_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _edn_scalar(text: str) -> Any:
    if text.startswith('"'):
        return re.sub(r"\\(.)", lambda m: _EDN_ESCAPES.get(m[1], m[1]), text[1:-1])
    if text == "nil":
        return None
    if text in ("true", "false"):
        return text == "true"
    if text.startswith(":"):
        return text[1:]
    return int(text)


def parse_edn_map(line: str) -> dict[str, Any]:
    """A flat EDN map of scalars, as the kv histories use (no nesting needed)."""
    return {m[1]: _edn_scalar(m[2]) for m in _EDN_PAIR.finditer(line)}


def parse_edn_kv(path: str | Path) -> list[Operation]:
    """Get / put / append operations from a Porcupine-style EDN kv history."""
    ops: list[Operation] = []
    pending: dict[int, _Pending] = {}
    for t, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        ev = parse_edn_map(line)
        process, kind, f = int(ev["process"]), ev["type"], ev["f"]
        if kind == "invoke":
            if process in pending:
                raise ValueError(f"{path}:{t + 1}: process {process} invoked twice")
            pending[process] = _Pending(float(t), f, (ev.get("key"), ev.get("value")))
            continue
        start = pending.pop(process, None)
        if start is None:
            raise ValueError(f"{path}:{t + 1}: completion without invocation")
        key, arg = start.value
        inp = KvInput(f, key, None if f == "get" else arg)
        if kind == "ok":
            output = ev.get("value") if f == "get" else None
            if f == "get" and output is None:
                output = ""
            ops.append(Operation(process, start.call, float(t), inp, output, Status.OK))
        elif kind == "fail":
            ops.append(Operation(process, start.call, float(t), inp, None, Status.FAIL))
        elif kind == "info":
            ops.append(Operation(process, start.call, None, inp, None, Status.UNKNOWN))
        else:
            raise ValueError(f"{path}:{t + 1}: unknown event type {kind!r}")
    for process, start in pending.items():
        key, arg = start.value
        inp = KvInput(start.f, key, None if start.f == "get" else arg)
        ops.append(Operation(process, start.call, None, inp, None, Status.UNKNOWN))
    return ops


def read_expected(path: str | Path) -> dict[str, bool | None]:
    """``EXPECTED.txt``: file name -> True (linearizable), False (not), None (no verdict)."""
    verdicts: dict[str, bool | None] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        name, verdict = parts
        verdicts[name] = {"linearizable": True, "not-linearizable": False}.get(verdict)
    return verdicts
