"""`hacontrol job status` and `hacontrol job run` colour states on a real terminal (a
pseudo-terminal here) and nowhere else: not in a pipe, not with NO_COLOR, not with --json.

The CLI runs as a process of its own against a real HTTP server on 127.0.0.1, so what is
checked is what a user's terminal would receive."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from hacontrol.cli.colour import GREEN, RED, RESET, YELLOW

from .http_server import serve_in_thread

ALLOCS = [
    {"id": "web-1", "job": "web", "namespace": "default", "node": "n1", "state": "running",
     "desired": "run", "version": 2, "health": "healthy", "restarts": 0},
    {"id": "web-2", "job": "web", "namespace": "default", "node": "n1", "state": "failed",
     "desired": "run", "version": 1, "health": None, "restarts": 3, "exit_code": 3},
    {"id": "web-3", "job": "web", "namespace": "default", "node": None, "state": "pending",
     "desired": "run", "version": 2, "health": None, "restarts": 0},
]
JOB = {"name": "web", "namespace": "default", "version": 2, "count": 2, "status": "running",
       "command": ["sleep", "60"], "counts": {"desired": 2, "running": 1, "pending": 1,
                                             "failed": 0}}


PLAN = {"job_modify_index": 7,
        "diff": [{"type": "added", "field": "env.MODE", "new": "fast"},
                 {"type": "deleted", "field": "env.OLD", "old": "x"},
                 {"type": "edited", "field": "count", "old": 1, "new": 3}],
        "changes": {"create": 2, "replace": 1, "stop": 0, "ignore": 0, "pending": 1},
        "placements": [{"action": "pending", "reason": "no node fits"}],
        "quota": {"ok": False, "reason": "cpu 3.0 over 2.0"}}


async def _handle(request: web.Request) -> web.StreamResponse:
    if request.method == "POST" and request.path.endswith("/plan"):
        return web.json_response(PLAN)
    if request.method == "PUT":
        return web.json_response({"job": {"name": "web", "version": 2}, "index": 5})
    if request.path == "/v1/allocations":
        return web.json_response({"allocations": ALLOCS})
    # Running and healthy: `job run` ends at once with a success.
    running = [dict(ALLOCS[0]), {**ALLOCS[0], "id": "web-4"}]
    return web.json_response({"job": {**JOB, "allocations": running}})


@pytest.fixture(scope="module")
def addr() -> Iterator[str]:
    with serve_in_thread(_handle) as (_, ports):
        yield f"http://127.0.0.1:{ports[0]}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "HACONTROL_TOKEN")}
    return {**env, "TERM": "xterm", **extra}


def _on_tty(args: list[str], env: dict[str, str], code: int = 0) -> str:
    """What the command writes to a terminal (stdout and stderr both on the pty)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "hacontrol", *args], stdin=slave,
                                stdout=slave, stderr=slave, env=env, close_fds=True)
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer to the terminal has closed it
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == code, b"".join(chunks)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode()


def _in_pipe(args: list[str], env: dict[str, str], code: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "hacontrol", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done
    return done.stdout + done.stderr


def test_job_status_colours_states_on_a_terminal_only(addr: str) -> None:
    args = ["job", "status", "web", "--addr", addr]
    tty = _on_tty(args, _env())
    assert f"{GREEN}running{RESET}" in tty
    assert f"{RED}failed{RESET}" in tty
    assert f"{YELLOW}pending{RESET}" in tty
    assert "failed=0" in tty  # a count is not a state: "failed=0" does not turn red
    plain = _in_pipe(args, _env())
    assert "\x1b[" not in plain and "running" in plain and "failed" in plain
    assert "\x1b[" not in _on_tty(args, _env(NO_COLOR="1"))
    raw = _on_tty([*args, "--json"], _env())
    assert "\x1b[" not in raw
    assert json.loads(raw)["job"]["name"] == "web"


def test_job_run_progress_is_coloured_on_a_terminal_only(addr: str, tmp_path: Path) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text("name: web\ncommand: [sleep, '60']\ncount: 2\n")
    args = ["job", "run", str(spec), "--addr", addr]
    tty = _on_tty(args, _env())
    assert f"{GREEN}running{RESET} 2, {GREEN}healthy{RESET} 2, failed 0" in tty
    assert "\r\x1b[K" in tty  # the progress line is redrawn in place
    plain = _in_pipe(args, _env())
    assert "\x1b[" not in plain
    assert "running 2, healthy 2, failed 0" in plain
    assert "succeeded" in plain


def test_job_plan_colours_its_diff_on_a_terminal_only(addr: str, tmp_path: Path) -> None:
    spec = tmp_path / "web.yaml"
    spec.write_text("name: web\ncommand: [sleep, '60']\ncount: 3\n")
    args = ["job", "plan", str(spec), "--addr", addr]
    tty = _on_tty(args, _env(), code=1)  # 1: the plan has changes
    assert f'{GREEN}  + env.MODE: "fast"{RESET}' in tty
    assert f'{RED}  - env.OLD: "x"{RESET}' in tty
    assert f"{YELLOW}  ~ count: 1 => 3{RESET}" in tty
    assert f"{RED}Quota: exceeded: cpu 3.0 over 2.0{RESET}" in tty
    assert f"{YELLOW}pending{RESET}" in tty
    plain = _in_pipe(args, _env(), code=1)
    assert "\x1b[" not in plain and '+ env.MODE: "fast"' in plain
    assert "\x1b[" not in _on_tty(args, _env(NO_COLOR="1"), code=1)
