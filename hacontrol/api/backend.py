"""What the API needs from its replica, as two small protocols (the controller implements
them; tests may pass anything that does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from hacontrol.controller.status import ReplicaStatus
from hacontrol.state.machine import StateMachine

T = TypeVar("T")


class Store(Protocol):
    """The replicated state: commands in, views out."""

    async def write(self, op: str, args: dict[str, Any], idem: str | None = None
                    ) -> dict[str, Any]:
        """The command's result once applied; raises `Rejection` or a controller error."""
        ...

    async def read(self, fn: Callable[[StateMachine], T], stale: bool = False) -> T:
        """`fn` over the state, linearizable unless `stale` (raises `NoQuorum`)."""
        ...

    def read_local(self, fn: Callable[[StateMachine], T]) -> T:
        """`fn` over the state as applied on this replica so far."""
        ...

    async def wait_changed(self, timeout: float) -> None:
        """Return once something is applied here, or at `timeout`."""
        ...


class Cluster(Protocol):
    """This replica's place in the cluster."""

    @property
    def id(self) -> str: ...

    def status(self) -> ReplicaStatus: ...

    def is_leader(self) -> bool: ...

    def term(self) -> int: ...
