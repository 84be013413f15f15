"""`hacontrol agent` runs with one malloc arena unless its operator chose a number: real
agent processes, their environment read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.harness import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc, /proc")


@contextmanager
def agent(tmp_path: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    token = tmp_path / "token"
    token.write_text("nothing-listens-there\n")
    token.chmod(0o600)
    argv = [sys.executable, "-m", "hacontrol", "agent", "--name", "a1",
            "--data-dir", str(tmp_path / "a1"), "--controllers", "http://127.0.0.1:9",
            "--token-file", str(token), "--cpu", "1", "--memory-mb", "64"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def executed_again(pid: int) -> bool:
    try:
        return "HACONTROL_AGENT_ARENAS" in environ(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_the_agent_executes_itself_once_with_one_arena(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    with agent(tmp_path, env) as proc:
        # Same process, new image: the environment it was executed with says so.
        wait_for(lambda: executed_again(proc.pid), 15, what="the agent executed again")
        assert environ(proc.pid)["MALLOC_ARENA_MAX"] == "1"
        # And the new image goes on as the agent (that it drops both variables from what
        # it hands on is the last test's).
        wait_for(lambda: (tmp_path / "a1").is_dir(), 15, what="the agent running")
        assert proc.poll() is None


def test_an_operators_arena_limit_is_left_alone(tmp_path: Path) -> None:
    env = {**os.environ, "MALLOC_ARENA_MAX": "4"}
    with agent(tmp_path, env) as proc:
        wait_for(lambda: (tmp_path / "a1").is_dir(), 15, what="the agent running")
        seen = environ(proc.pid)
        assert seen["MALLOC_ARENA_MAX"] == "4" and "HACONTROL_AGENT_ARENAS" not in seen
        assert proc.poll() is None


def test_the_executed_agent_drops_the_variables_it_set() -> None:
    code = ("import os; from hacontrol.agent.arenas import limit_arenas; limit_arenas(); "
            "print(os.environ.get('MALLOC_ARENA_MAX'), os.environ.get('HACONTROL_AGENT_ARENAS'))")
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "HACONTROL_AGENT_ARENAS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30, check=True)
    assert out.stdout.split() == ["None", "None"]
