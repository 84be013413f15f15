"""Per-allocation cgroups: limits, membership, kill, freeze and OOM accounting.

The mode is detected once per supervisor:

* ``cgroup-v2``: a pure unified hierarchy at the mount point, one directory per
  allocation with ``memory.max``, ``cpu.max``, ``pids.max``, ``cgroup.freeze``,
  ``cgroup.kill`` and ``memory.events``.
* ``cgroup-v1``: one directory per allocation in each of the memory, cpu, pids
  and freezer hierarchies (``memory.limit_in_bytes``, ``cpu.cfs_quota_us``,
  ``pids.max``, ``freezer.state``, ``memory.oom_control``).
* ``rlimit``: no usable cgroups; limits fall back to rlimits and a watchdog
  (see :mod:`hacontrol.agent.limits`).

Allocation cgroups are nested under the agent's own cgroup in each hierarchy
(``<mount>/<controller>/<agent's path>/hacontrol/<alloc_id>``), so an agent
that is itself confined (a container, a systemd unit) keeps its tasks within
its own limits and only touches the part of the tree delegated to it.

Joining: a process is in its cgroups before the allocation's command runs. In v1 it
is born there: the start thread joins them for the instant it spawns it
(:mod:`hacontrol.agent.direct`). Otherwise the agent moves it while it waits at the
start gate (:mod:`hacontrol.agent.launch`), or the exec wrapper joins them itself
(:mod:`hacontrol.agent.execwrap`, for inherited sockets). Nothing the allocation runs
can therefore fork outside the cgroup; joining from the agent right after a plain spawn
would leave a window in which the child could already have forked.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hacontrol.model.resources import Resources

log = logging.getLogger(__name__)

MODE_V2 = "cgroup-v2"
MODE_V1 = "cgroup-v1"
MODE_RLIMIT = "rlimit"
MODES = frozenset({MODE_V2, MODE_V1, MODE_RLIMIT})

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT_NAME = "hacontrol"
V1_CONTROLLERS = ("memory", "cpu", "pids", "freezer")
# The unified hierarchy has a single directory per allocation; this key names it.
V2_KEY = "unified"

CFS_PERIOD_US = 100_000
# The kernel rejects quotas below 1 ms.
_MIN_QUOTA_US = 1_000
_FREEZE_TIMEOUT_S = 2.0
_KILL_ROUNDS = 50


@dataclass(frozen=True)
class Layout:
    """Where allocation cgroups go: controller (or V2_KEY) -> parent directory."""

    mode: str
    bases: dict[str, Path]


# ------------------------------------------------------------------ pure parts


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/<pid>/cgroup -> controller -> path ("" is the unified hierarchy)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
            continue
        for c in controllers.split(","):
            out[c] = path
    return out


def cpu_quota_us(cores: float, period_us: int = CFS_PERIOD_US) -> int:
    return max(int(round(cores * period_us)), _MIN_QUOTA_US)


# The CPU quota waits until the process has started. A start runs inside the allocation's
# cgroups (in v1 the start thread itself joins them before it forks, so the child is born
# there), and under a small quota (cpu 0.001: 1 ms of every 100) the start thread and the
# child's exec were throttled to a crawl while the thread held the GIL across vfork: 1,000
# instances of `sleep` with cpu 0.001 took 27 s to run against 7 s with cpu 1.0. Memory and
# pid limits apply from the first instruction; the CPU one a few milliseconds later.
CPU_OPEN_V1 = "-1"
CPU_OPEN_V2 = f"max {CFS_PERIOD_US}"


def v1_limit_writes(res: Resources | None, has_memsw: bool) -> list[tuple[str, str, str]]:
    """(controller, file, value) in the order they must be written when the cgroup is made
    ready for a start; None: no limits. The CPU quota is left open (see `cpu_limit`)."""
    if res is None:
        return []
    limit = str(res.memory_mb * 1024 * 1024)
    writes = [("memory", "memory.limit_in_bytes", limit)]
    if has_memsw:
        # Without this a process with swap available would page out instead
        # of being OOM-killed at its limit; memsw must be >= the limit,
        # hence written after it.
        writes.append(("memory", "memory.memsw.limit_in_bytes", limit))
    writes.append(("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)))
    writes.append(("cpu", "cpu.cfs_quota_us", CPU_OPEN_V1))
    if res.pids is not None:
        writes.append(("pids", "pids.max", str(res.pids)))
    return writes


def cpu_limit(mode: str, res: Resources | None) -> tuple[str, str, str] | None:
    """(controller or V2_KEY, file, value) of `res`'s CPU quota, written once the process
    has started (`AllocationCgroup.limit_cpu`); None: nothing to limit."""
    if res is None or mode not in (MODE_V1, MODE_V2):
        return None
    quota = cpu_quota_us(res.cpu)
    if mode == MODE_V1:
        return ("cpu", "cpu.cfs_quota_us", str(quota))
    return (V2_KEY, "cpu.max", f"{quota} {CFS_PERIOD_US}")


def v1_reset_writes(res: Resources | None, has_memsw: bool) -> list[tuple[str, str, str]]:
    """(controller, file, value) that give a cgroup kept from another allocation `res`'s
    limits: every limit is written, unlimited where `res` sets none, and the memory
    failure counter is cleared (old kernels count OOM by it)."""
    unlimited = [("memory", "memory.limit_in_bytes", "-1"),
                 ("cpu", "cpu.cfs_period_us", str(CFS_PERIOD_US)),
                 ("cpu", "cpu.cfs_quota_us", "-1"),
                 ("pids", "pids.max", "max")]
    new = {(c, f): v for c, f, v in v1_limit_writes(res, has_memsw)}
    # memsw must stay >= the limit at every write: lifted first, set again after it.
    writes = [("memory", "memory.memsw.limit_in_bytes", "-1")] if has_memsw else []
    writes += [(c, f, new.get((c, f), v)) for c, f, v in unlimited]
    if ("memory", "memory.memsw.limit_in_bytes") in new:
        writes.append(("memory", "memory.memsw.limit_in_bytes",
                       new[("memory", "memory.memsw.limit_in_bytes")]))
    writes.append(("memory", "memory.failcnt", "0"))
    return writes


def v2_limit_writes(res: Resources | None) -> list[tuple[str, str]]:
    """(file, value) in the order they must be written; None: no limits."""
    if res is None:
        return []
    writes = [
        ("memory.max", str(res.memory_mb * 1024 * 1024)),
        ("memory.swap.max", "0"),
        ("cpu.max", CPU_OPEN_V2),  # see `cpu_limit`
    ]
    if res.pids is not None:
        writes.append(("pids.max", str(res.pids)))
    return writes


def parse_keyed(text: str) -> dict[str, int]:
    """"key value" lines (memory.events, memory.oom_control, cgroup.events)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


# ------------------------------------------------------------------- detection


def _read(path: Path) -> str:
    return path.read_text()


def _read_all(path: str) -> bytes:
    """A whole (pseudo) file without Python's buffered file objects: the sampler reads
    one per allocation per pass."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = [os.read(fd, 65536)]
        while chunks[-1]:
            chunks.append(os.read(fd, 65536))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _probe(base: Path) -> bool:
    """Whether we may create (and remove) allocation directories under ``base``."""
    try:
        base.mkdir(parents=True, exist_ok=True)
        probe = base / f".probe-{os.getpid()}"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
        return True
    except OSError:
        return False


def detect(root: Path = CGROUP_ROOT, self_cgroup: str | None = None) -> Layout:
    """Pick the isolation mode this host allows, preferring v2, then v1."""
    if self_cgroup is None:
        try:
            self_cgroup = _read(Path("/proc/self/cgroup"))
        except OSError:
            return Layout(MODE_RLIMIT, {})
    own = parse_proc_cgroup(self_cgroup)
    if (root / "cgroup.controllers").exists():
        layout = _detect_v2(root, own.get("", "/"))
        if layout is not None:
            return layout
    if (root / "memory").is_dir():
        layout = _detect_v1(root, own)
        if layout is not None:
            return layout
    return Layout(MODE_RLIMIT, {})


def _nested(mount: Path, own_path: str) -> Path:
    candidate = mount / own_path.lstrip("/")
    # Inside a cgroup namespace or a container the path in /proc/self/cgroup
    # may not exist under our mount; the mount root is then our own subtree.
    return (candidate if candidate.is_dir() else mount) / PARENT_NAME


def _detect_v1(root: Path, own: dict[str, str]) -> Layout | None:
    bases: dict[str, Path] = {}
    for c in V1_CONTROLLERS:
        mount = root / c
        if not mount.is_dir():
            continue
        base = _nested(mount, own.get(c, "/"))
        if _probe(base):
            bases[c] = base
    if "memory" not in bases or "freezer" not in bases:
        # Without these we could neither enforce memory nor kill reliably;
        # the rlimit mode is honest about that.
        return None
    return Layout(MODE_V1, bases)


def _detect_v2(root: Path, own_path: str) -> Layout | None:
    base = _nested(root, own_path)
    if not _probe(base):
        return None
    try:
        available = _read(base.parent / "cgroup.controllers").split()
        wanted = [c for c in ("memory", "cpu", "pids") if c in available]
        # Controllers must be enabled in every ancestor's subtree_control; the
        # agent's own cgroup cannot do so while it holds processes (the "no
        # internal processes" rule), in which case limits are unavailable.
        for directory in (base.parent, base):
            enabled = _read(directory / "cgroup.subtree_control").split()
            missing = [c for c in wanted if c not in enabled]
            if missing:
                (directory / "cgroup.subtree_control").write_text(
                    " ".join("+" + c for c in missing)
                )
        if "memory" not in _read(base / "cgroup.subtree_control").split():
            return None
    except OSError as exc:
        log.info("cgroup v2 controllers unavailable under %s: %s", base, exc)
        return None
    return Layout(MODE_V2, {V2_KEY: base})


# -------------------------------------------------------------------- allocation


_PARENTS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}


class AllocationCgroup:
    """The cgroup directories of one process (one per hierarchy in v1)."""

    __slots__ = ("_name", "_parents", "mode", "oom_base")

    def __init__(self, mode: str, paths: Mapping[str, Path | str]) -> None:
        self.mode = mode
        self.paths = paths
        # OOM kills counted before this allocation had it (a cgroup kept from another).
        self.oom_base = 0

    @classmethod
    def create(cls, layout: Layout, name: str, res: Resources | None) -> AllocationCgroup:
        """Make fresh directories and apply limits; raises OSError on failure."""
        paths = {c: base / name for c, base in layout.bases.items()}
        cg = cls(layout.mode, paths)
        try:
            for path in paths.values():
                if path.exists():
                    # Left by an agent crash: its OOM counters would carry over; redo.
                    leftover = cls(layout.mode, {"x": path})
                    leftover.kill()
                    leftover.remove()
                path.mkdir()
            if layout.mode == MODE_V1:
                has_memsw = (paths["memory"] / "memory.memsw.limit_in_bytes").exists()
                for controller, fname, value in v1_limit_writes(res, has_memsw):
                    if controller in paths:
                        (paths[controller] / fname).write_text(value)
                    else:
                        log.warning("no %s hierarchy: %s not applied", controller, fname)
            else:
                for fname, value in v2_limit_writes(res):
                    target = paths[V2_KEY] / fname
                    if fname == "memory.swap.max" and not target.exists():
                        continue
                    target.write_text(value)
        except OSError:
            cg.remove()
            raise
        return cg

    @property
    def paths(self) -> dict[str, Path]:
        """The directory in each hierarchy, made into Paths when asked for."""
        return {k: Path(v) for k, v in self.record().items()}

    @paths.setter
    def paths(self, paths: Mapping[str, Path | str]) -> None:
        # Held as the hierarchies' parent directories, one tuple shared by all cgroups that
        # have them (_PARENTS), and the one name they all have: four Paths, then four
        # strings, were 1.4 KB, then 0.6 KB per allocation (tracemalloc, 200 running).
        dirs = [(k, str(v)) for k, v in paths.items()]
        names = {os.path.basename(d) for _, d in dirs}
        self._name = names.pop() if len(names) == 1 else ""
        parents = tuple((k, os.path.dirname(d) if self._name else d) for k, d in dirs)
        self._parents = _PARENTS.setdefault(parents, parents)

    @classmethod
    def from_record(cls, mode: str, paths: dict[str, str]) -> AllocationCgroup:
        return cls(mode, paths)

    def record(self) -> dict[str, str]:
        return {k: os.path.join(p, self._name) if self._name else p for k, p in self._parents}

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.record().values()]

    def pids(self) -> list[int]:
        found: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(OSError, ValueError):
                found.update(int(x) for x in _read(path / "cgroup.procs").split())
        # A start thread sits in it for the instant it spawns (agent.direct): not a member.
        found.discard(os.getpid())
        return sorted(found)

    def member_pids(self) -> list[int]:
        """The processes in the cgroup, from one hierarchy's list (for sampling).

        The exec wrapper joins every hierarchy and children inherit them all, so one list
        is enough to account the allocation; kill and signal use pids(), which also finds
        a process that moved itself out of some hierarchies.
        """
        dirs = self.record()
        key = next((k for k in (V2_KEY, "pids", "memory", "freezer") if k in dirs),
                   next(iter(dirs), None))
        if key is None:
            return []
        try:
            found = [int(x) for x in _read_all(os.path.join(dirs[key], "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []
        me = os.getpid()  # a start thread, for the instant it spawns (see pids())
        return [p for p in found if p != me] if me in found else found

    def _freezer(self) -> Path | None:
        if self.mode == MODE_V2:
            return self.paths.get(V2_KEY)
        return self.paths.get("freezer")

    def can_freeze(self) -> bool:
        return self._freezer() is not None

    def _set_frozen(self, frozen: bool) -> bool:
        path = self._freezer()
        if path is None:
            return False
        try:
            if self.mode == MODE_V2:
                (path / "cgroup.freeze").write_text("1" if frozen else "0")
            else:
                (path / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
        except OSError:
            return False
        return True

    def is_frozen(self) -> bool:
        path = self._freezer()
        if path is None:
            return False
        try:
            if self.mode == MODE_V2:
                return parse_keyed(_read(path / "cgroup.events")).get("frozen") == 1
            return _read(path / "freezer.state").strip() == "FROZEN"
        except OSError:
            return False

    def freeze_begin(self) -> bool:
        """Ask the kernel to freeze; poll is_frozen() for completion."""
        return self._set_frozen(True)

    def thaw(self) -> bool:
        return self._set_frozen(False)

    def limit_cpu(self, res: Resources | None) -> None:
        """Apply `res`'s CPU quota (see `cpu_limit`); raises OSError on failure."""
        write = cpu_limit(self.mode, res)
        if write is None:
            return
        controller, fname, value = write
        path = self.paths.get(controller)
        if path is None:
            log.warning("no %s hierarchy: %s not applied", controller, fname)
            return
        (path / fname).write_text(value)

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, whatever its session or group.

        Synchronous and bounded: v2 has cgroup.kill; in v1 the cgroup is frozen
        first so that nothing can fork between reading the list and the kill,
        then every listed pid is killed and the cgroup thawed so the kernel can
        deliver the kills (frozen processes do not die).
        """
        v2 = self.paths.get(V2_KEY)
        if v2 is not None and (v2 / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                (v2 / "cgroup.kill").write_text("1")
                return
        froze = self._set_frozen(True)
        if froze:
            deadline = time.monotonic() + _FREEZE_TIMEOUT_S
            # Bounded busy wait: freezing takes microseconds to milliseconds
            # and this runs only at the end of a stop.
            while not self.is_frozen() and time.monotonic() < deadline:
                time.sleep(0.001)
        for _ in range(_KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if froze:
                break
        if froze:
            self._set_frozen(False)

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        try:
            if self.mode == MODE_V2:
                return parse_keyed(_read(self.paths[V2_KEY] / "memory.events")).get(
                    "oom_kill", 0
                )
            mem = self.paths.get("memory")
            if mem is None:
                return 0
            counters = parse_keyed(_read(mem / "memory.oom_control"))
            if "oom_kill" in counters:
                return counters["oom_kill"]
            # Kernels before 4.13 have no oom_kill counter; hitting the limit
            # is the best evidence left.
            return 1 if int(_read(mem / "memory.failcnt")) > 0 else 0
        except (OSError, KeyError, ValueError):
            return 0

    def remove(self) -> bool:
        """rmdir every directory; False if some still hold processes.

        A v1 memory cgroup is emptied of the page cache charged to it first (the logs its
        processes wrote, mostly). Removed with those pages, it lives on in the kernel as
        a dying cgroup until they are reclaimed, and a node that starts allocations for
        months would pile them up. 20 cgroups whose process wrote 200 kB each, removed:
        19-20 left dying without this, 1 with it."""
        ok = True
        mem = self.paths.get("memory") if self.mode == MODE_V1 else None
        if mem is not None:
            with contextlib.suppress(OSError):  # gone already, or still in use
                (mem / "memory.force_empty").write_text("0")
        for path in self.paths.values():
            try:
                path.rmdir()
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    ok = False
        return ok
