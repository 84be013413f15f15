"""A run leaves nothing behind: every process, namespace, link and temp dir is registered here.

Each run owns a `Registry`. Teardown happens in the backend's own `finally`, and again, as a
safety net, at interpreter exit and on SIGINT/SIGTERM. A run that dies harder than that
(SIGKILL, power loss) leaves an owner file in `state_dir()` listing what it created;
`sweep_leftovers()` cleans up after every run whose owner process is gone. Only names carrying
our prefix are ever touched, so unrelated namespaces and links on the machine are safe.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

# Link names are capped at 15 characters by the kernel, so the prefix is short; it is also
# distinctive enough that nothing else on a machine plausibly uses it.
PREFIX = "hcx-"

STOP_GRACE_S = 5.0


def state_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"hcx-chaos-{os.getuid()}"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    return d


def new_run_id() -> str:
    # Six hex digits keep "hcx-<rid>" within the link-name limit with room for a suffix.
    return secrets.token_hex(3)


def _ctime(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _same_process(pid: int, ctime: float | None) -> bool:
    """Whether `pid` is still the process we recorded, not a later one reusing the number."""
    now = _ctime(pid)
    if now is None:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    return ctime is None or abs(now - ctime) < 0.01


def run_cmd(argv: list[str], check: bool = True, timeout: float = 20.0,
            input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          input=input_text, stdin=None if input_text is not None
                          else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def stop_pids(pids: list[tuple[int, float | None]], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM then SIGKILL each still-ours pid; paused ones are continued so they can exit."""
    live = [(p, c) for p, c in pids if _same_process(p, c)]
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [(p, c) for p, c in live if _same_process(p, c)]
        if live:
            time.sleep(0.05)
    for pid, _ in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        live = [(p, c) for p, c in live if _same_process(p, c)]
        if live:
            time.sleep(0.02)


def netns_pids(ns: str) -> list[int]:
    if shutil.which("ip") is None:
        return []
    out = run_cmd(["ip", "netns", "pids", ns], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def delete_netns(ns: str) -> None:
    # A process left inside would keep the namespace (and its links) alive after the unmount.
    stop_pids([(p, _ctime(p)) for p in netns_pids(ns)], grace_s=2.0)
    run_cmd(["ip", "netns", "del", ns], check=False)


def delete_link(name: str) -> None:
    if shutil.which("ip") is None:
        return
    if run_cmd(["ip", "link", "show", name], check=False).returncode == 0:
        run_cmd(["ip", "link", "del", name], check=False)


@dataclass(eq=False)  # identity semantics: registries live in a set
class Registry:
    """What one run created, in the order it must be undone, and its owner file."""

    run_id: str = field(default_factory=new_run_id)
    pids: dict[int, float | None] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)
    # Extra undo steps (e.g. reaping Popen objects), run before anything is deleted.
    hooks: list[Callable[[], None]] = field(default_factory=list)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _closed: bool = False

    def __post_init__(self) -> None:
        _ACTIVE.add(self)
        install_handlers()
        self._save()

    @property
    def owner_file(self) -> Path:
        return state_dir() / f"{self.run_id}.json"

    def _save(self) -> None:
        data = {"owner_pid": os.getpid(), "owner_ctime": _ctime(os.getpid()),
                "pids": [[p, c] for p, c in self.pids.items()],
                "namespaces": self.namespaces, "links": self.links,
                "dirs": [str(d) for d in self.dirs]}
        tmp = self.owner_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.owner_file)

    def add_pid(self, pid: int) -> None:
        with self._lock:
            self.pids[pid] = _ctime(pid)
            self._save()

    def drop_pid(self, pid: int) -> None:
        with self._lock:
            if self.pids.pop(pid, 0) != 0:
                self._save()

    def add_namespace(self, ns: str) -> None:
        assert ns.startswith(PREFIX), ns
        with self._lock:
            self.namespaces.append(ns)
            self._save()

    def add_link(self, name: str) -> None:
        assert name.startswith(PREFIX), name
        with self._lock:
            self.links.append(name)
            self._save()

    def add_dir(self, path: Path) -> None:
        with self._lock:
            self.dirs.append(path)
            self._save()

    def add_hook(self, fn: Callable[[], None]) -> None:
        with self._lock:
            self.hooks.append(fn)

    def teardown(self) -> list[str]:
        """Undo everything; returns the errors met (teardown itself never raises)."""
        errors: list[str] = []
        with self._lock:
            if self._closed:
                return errors
            steps: list[tuple[str, Callable[[], None]]] = []
            steps.append(("pids", lambda: stop_pids(list(self.pids.items()))))
            steps += [("hook", h) for h in self.hooks]
            steps += [(f"link {n}", lambda n=n: delete_link(n)) for n in self.links]
            steps += [(f"netns {n}", lambda n=n: delete_netns(n))
                      for n in reversed(self.namespaces)]
            steps += [(f"dir {d}", lambda d=d: shutil.rmtree(d, ignore_errors=True))
                      for d in self.dirs]
            for what, step in steps:
                try:
                    step()
                except Exception as exc:  # keep undoing the rest whatever one step does
                    errors.append(f"{what}: {exc!r}")
            self._closed = True
            _ACTIVE.discard(self)
            if not errors:
                with contextlib.suppress(OSError):
                    self.owner_file.unlink()
        return errors


_ACTIVE: set[Registry] = set()
_ATEXIT = False
_SIGNALS = False
_PREVIOUS: dict[int, Any] = {}


def teardown_all() -> None:
    for reg in list(_ACTIVE):
        reg.teardown()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    teardown_all()
    prev = _PREVIOUS.get(signum)
    if callable(prev):
        prev(signum, frame)
    else:
        # Default disposition: die of the same signal, as the caller would expect.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_handlers() -> None:
    """Hook teardown into exit and SIGINT/SIGTERM, chaining to handlers already set.

    Signal handlers can only be set from the main thread; a backend set up from a worker
    thread (e.g. `asyncio.to_thread`) gets them from its constructor, run on the main one.
    """
    global _ATEXIT, _SIGNALS
    if not _ATEXIT:
        _ATEXIT = True
        atexit.register(teardown_all)
    if _SIGNALS or threading.current_thread() is not threading.main_thread():
        return
    _SIGNALS = True
    for sig in (signal.SIGINT, signal.SIGTERM):
        prev = signal.getsignal(sig)
        if prev == signal.SIG_IGN:
            continue  # whoever started us chose to ignore it (nohup, a background job)
        _PREVIOUS[sig] = prev
        signal.signal(sig, _on_signal)


def _owner_alive(data: dict[str, Any]) -> bool:
    pid = data.get("owner_pid")
    return isinstance(pid, int) and _same_process(pid, data.get("owner_ctime"))


def sweep_leftovers(prefix: str = PREFIX) -> list[str]:
    """Remove what earlier crashed runs left: their processes, namespaces, links and dirs.

    Only runs whose owner process is gone are swept, so a run going on in parallel is left
    alone. Namespaces and root links with our prefix that no live run claims are removed too
    (their owner file may have been lost). Returns a description of each thing removed.
    """
    removed: list[str] = []
    claimed: set[str] = set()
    for f in sorted(state_dir().glob("*.json")):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _owner_alive(data):
            claimed.update(data.get("namespaces", []))
            claimed.update(data.get("links", []))
            continue
        pids = [(int(p), c) for p, c in data.get("pids", [])]
        live = [(p, c) for p, c in pids if _same_process(p, c)]
        if live:
            stop_pids(live, grace_s=2.0)
            removed += [f"pid {p}" for p, _ in live]
        for name in data.get("links", []):
            if name.startswith(prefix):
                delete_link(name)
        for ns in data.get("namespaces", []):
            if ns.startswith(prefix):
                delete_netns(ns)
                removed.append(f"netns {ns}")
        for d in data.get("dirs", []):
            shutil.rmtree(d, ignore_errors=True)
        with contextlib.suppress(OSError):
            f.unlink()
    from ..lazyfs.mount import sweep_dead_mounts
    removed += sweep_dead_mounts()
    if shutil.which("ip") is None:
        return removed
    for ns in list_netns():
        if ns.startswith(prefix) and ns not in claimed:
            delete_netns(ns)
            removed.append(f"netns {ns}")
    for link in list_links():
        if link.startswith(prefix) and link not in claimed:
            delete_link(link)
            removed.append(f"link {link}")
    return removed


def list_netns() -> list[str]:
    out = run_cmd(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def list_links() -> list[str]:
    out = run_cmd(["ip", "-o", "link", "show"], check=False).stdout
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@")[0])
    return names
