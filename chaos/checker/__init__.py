"""Linearizability checking for histories recorded by the chaos suite."""

from chaos.checker.linearizability import (
    CheckResult,
    Counterexample,
    Operation,
    PartitionResult,
    Status,
    check,
)
from chaos.checker.models import (
    UNKNOWN,
    KvInput,
    KvModel,
    Model,
    ModelBase,
    ObjectState,
    OpInput,
    RegisterInput,
    RegisterModel,
    TableModel,
    versioned_object_model,
)

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "Counterexample",
    "KvInput",
    "KvModel",
    "Model",
    "ModelBase",
    "ObjectState",
    "OpInput",
    "Operation",
    "PartitionResult",
    "RegisterInput",
    "RegisterModel",
    "Status",
    "TableModel",
    "check",
    "versioned_object_model",
]
