"""Emptied allocation cgroups kept for the next allocation: a rename and a reset instead of
an rmdir now and a mkdir later.

Making a memory cgroup costs about 1.2 ms of kernel CPU here, under the kernel's cgroup
mutex that every start's join and leave also wait on, and removing one queues more kernel
work behind it; a burst of starts that follows a burst of stops paid both. An allocation
that ends hands its cgroup here once no process is left in it; the next start of another
allocation takes it, renamed after its new owner (`<alloc_id>.<scope>`, as a fresh one
would be named, so that every lookup by name still finds it) and reset: thawed, every limit
written again (unlimited where the new allocation sets none), its failure counter cleared
and its OOM counter read, so that only the new allocation's OOM kills count
(`AllocationCgroup.oom_base`).

cgroup v1 only: the kernel renames cgroup directories in v1 hierarchies (within their
parent) but refuses a rename in the unified hierarchy, and a cgroup named after the
allocation that used it first would make `AllocationCgroup.create` of that allocation, run
again later, clear a cgroup some other allocation holds. Elsewhere `give` refuses, and the
caller removes the cgroup as before.

Blocking (rename, writes to cgroupfs): called in a start thread or through
`asyncio.to_thread`, never on the event loop. Thread-safe.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

from hacontrol.agent.cgroups import MODE_V1, AllocationCgroup, Layout, v1_reset_writes
from hacontrol.model.resources import Resources

log = logging.getLogger(__name__)

# Enough for a burst of a thousand starts after a thousand stops; each kept memory cgroup
# costs the kernel some tens of kilobytes.
POOL_LIMIT = 1024


class CgroupPool:
    def __init__(self, layout: Layout, limit: int = POOL_LIMIT) -> None:
        self._layout = layout
        self._limit = limit if layout.mode == MODE_V1 else 0
        self._kept: list[AllocationCgroup] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._kept)

    def give(self, cg: AllocationCgroup) -> bool:
        """Keep `cg`, which no process uses any more; False: not kept (v2, pool full, or
        it still lists processes), the caller removes it."""
        if cg.mode != MODE_V1 or set(cg.paths) != set(self._layout.bases) or cg.pids():
            return False
        with self._lock:
            if len(self._kept) >= self._limit:
                return False
            self._kept.append(cg)
        return True

    def take(self, name: str, res: Resources | None) -> AllocationCgroup | None:
        """A kept cgroup renamed to `name` with `res`'s limits (None: unlimited); None when
        none is kept (or the kept one could not be reused: it is removed then)."""
        with self._lock:
            if not self._kept:
                return None
            # The allocation's own earlier cgroup first: no rename at all.
            own = next((i for i, cg in enumerate(self._kept)
                        if all(p.name == name for p in cg.paths.values())), None)
            cg = self._kept.pop(-1 if own is None else own)
        try:
            return _reuse(cg, name, res)
        except OSError as exc:
            log.info("a kept cgroup could not be reused (%s): removed", exc)
            cg.remove()
            return None

    def drain(self) -> int:
        """Remove every kept cgroup (the supervisor stops); returns how many."""
        with self._lock:
            kept, self._kept = self._kept, []
        for cg in kept:
            cg.remove()
        return len(kept)


def _reuse(cg: AllocationCgroup, name: str, res: Resources | None) -> AllocationCgroup:
    paths: dict[str, Path] = {}
    try:
        for controller, path in cg.paths.items():
            target = path.with_name(name)
            if target != path:
                os.rename(path, target)
            paths[controller] = target
    except OSError:
        # Renamed in part: remove() must find each directory where it now is.
        cg.paths = {**cg.paths, **paths}
        raise
    fresh = AllocationCgroup(cg.mode, paths)
    fresh.thaw()
    has_memsw = (paths["memory"] / "memory.memsw.limit_in_bytes").exists()
    for controller, fname, value in v1_reset_writes(res, has_memsw):
        where = paths.get(controller)
        if where is not None:
            with contextlib.suppress(FileNotFoundError):  # e.g. no swap accounting file
                (where / fname).write_text(value)
    fresh.oom_base = fresh.oom_kills()
    return fresh
