"""The last list view built of each kind, reused while the state has not changed.

Listing every node or every job builds one view per row under the state lock; at scale
that is most of a replica's work for a dashboard or a script that polls (`GET /v1/nodes`
and `GET /v1/jobs` were 36 % and 19 % of the CPU of the replica serving the reads of
`bench/scheduler.py --scale --quick`'s soak). Views are pure functions of the state, and
every applied entry moves the state's index, so a view built at one index is the view at
that index: it is kept until the index moves (or a restore brings another store).

Built and read under the state lock (inside a `read` callback). Cached values are shared
between requests: callers copy what they change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from hacontrol.state.machine import StateMachine
from hacontrol.state.store import Store

T = TypeVar("T")

_views: weakref.WeakKeyDictionary[Store, dict[str, tuple[int, Any]]] = \
    weakref.WeakKeyDictionary()


def cached(kind: str, m: StateMachine, build: Callable[[StateMachine], T]) -> T:
    """`build(m)`, or what it returned at the state's current index."""
    store = m.store
    kept = _views.setdefault(store, {})
    hit = kept.get(kind)
    if hit is not None and hit[0] == store.index:
        value: T = hit[1]
        return value
    value = build(m)
    kept[kind] = (store.index, value)
    return value
