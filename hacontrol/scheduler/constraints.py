"""Constraints: which nodes a piece of work may run on.

A constraint names a node fact (`node.name`, `label.<key>`, `attr.<key>`), an operator and a
value. Missing facts fail the positive operators (`=`, `in`, `regexp`) and pass `!=`, so
work that asks for something specific never lands on a node that says nothing about it,
while work that only avoids something is not blocked by nodes that never mention it.

`distinct_nodes` is not about a node's facts but about what runs there; the planner counts
instances, so here it always passes and `is_distinct` lets the planner find it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from hacontrol.model.pattern import compile_pattern

EQ = "="
NE = "!="
IN = "in"
REGEXP = "regexp"
DISTINCT_NODES = "distinct_nodes"
OPERATORS: frozenset[str] = frozenset({EQ, NE, IN, REGEXP, DISTINCT_NODES})

NODE_NAME = "node.name"
LABEL_PREFIX = "label."
ATTR_PREFIX = "attr."


class NodeFacts(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def attributes(self) -> Mapping[str, str]: ...


@dataclass(frozen=True)
class Constraint:
    attribute: str = ""
    operator: str = EQ
    # a list for `in`; stored as a tuple so constraints stay hashable and can key caches
    value: str | Sequence[str] = ""

    def __post_init__(self) -> None:
        if not isinstance(self.value, str):
            object.__setattr__(self, "value", tuple(str(v) for v in self.value))


def is_distinct(c: Constraint) -> bool:
    return c.operator == DISTINCT_NODES


def _values(c: Constraint) -> tuple[str, ...]:
    if isinstance(c.value, str):
        # a comma-separated string is accepted too, as job files often write sets that way
        return tuple(v.strip() for v in c.value.split(",") if v.strip())
    return tuple(c.value)


def constraint_error(c: Constraint) -> str | None:
    """Why `c` cannot be evaluated, or None; job validation can reuse this."""
    if c.operator not in OPERATORS:
        return f"unknown operator {c.operator!r} (use one of {', '.join(sorted(OPERATORS))})"
    if c.operator == DISTINCT_NODES:
        return None
    a = c.attribute
    if not (a == NODE_NAME or (a.startswith(LABEL_PREFIX) and len(a) > len(LABEL_PREFIX))
            or (a.startswith(ATTR_PREFIX) and len(a) > len(ATTR_PREFIX))):
        return f"unknown attribute {a!r} (use node.name, label.<key> or attr.<key>)"
    if c.operator == IN and not _values(c):
        return "operator 'in' needs a non-empty list of values"
    if c.operator in (EQ, NE, REGEXP) and not isinstance(c.value, str):
        return f"operator {c.operator!r} needs a single string value"
    if c.operator == REGEXP:
        try:
            compile_pattern(str(c.value))
        except ValueError as err:
            return f"bad regular expression {c.value!r}: {err}"
    return None


def resolve(attribute: str, node: NodeFacts) -> str | None:
    if attribute == NODE_NAME:
        return node.name
    if attribute.startswith(LABEL_PREFIX):
        return node.labels.get(attribute[len(LABEL_PREFIX):])
    if attribute.startswith(ATTR_PREFIX):
        return node.attributes.get(attribute[len(ATTR_PREFIX):])
    return None


def satisfies(c: Constraint, node: NodeFacts) -> bool:
    """Whether `node`'s facts pass `c`; invalid constraints pass no node."""
    if c.operator == DISTINCT_NODES:
        return True
    if constraint_error(c) is not None:
        return False
    actual = resolve(c.attribute, node)
    if c.operator == NE:
        return actual is None or actual != c.value
    if actual is None:
        return False
    if c.operator == EQ:
        return actual == c.value
    if c.operator == IN:
        return actual in _values(c)
    # linear time in len(actual): RE2, never a backtracking engine (see model/pattern.py)
    return compile_pattern(str(c.value)).search(actual) is not None


def describe(c: Constraint) -> str:
    if c.operator == DISTINCT_NODES:
        return DISTINCT_NODES
    value = c.value if isinstance(c.value, str) else "[" + ", ".join(c.value) + "]"
    return f"{c.attribute} {c.operator} {value}"
