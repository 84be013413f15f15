"""Process groups as stops see them: live members only, zombies never."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from hacontrol.agent import procinfo


def _wait(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_live_leader() -> None:
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert procinfo.group_alive(p.pid)
        assert procinfo.group_members(p.pid) == [p.pid]
    finally:
        p.kill()
        p.wait()
    assert not procinfo.group_alive(p.pid) and procinfo.group_members(p.pid) == []


def test_member_left_behind_by_its_leader() -> None:
    p = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!"], stdout=subprocess.PIPE,
                         start_new_session=True)
    assert p.stdout is not None
    child = int(p.stdout.readline())
    p.wait()  # the leader is gone and reaped; its child still runs in the group
    try:
        assert procinfo.group_alive(p.pid)
        assert procinfo.group_members(p.pid) == [child]
    finally:
        os.kill(child, signal.SIGKILL)
    _wait(lambda: not procinfo.group_alive(p.pid), "the group never emptied")


def test_zombie_leader_is_not_alive() -> None:
    p = subprocess.Popen(["true"], start_new_session=True)
    try:
        _wait(lambda: procinfo._state_and_group(p.pid) in (None, (b"Z", p.pid)),
              "never a zombie")
        assert not procinfo.group_alive(p.pid)
        assert procinfo.group_members(p.pid) == []
    finally:
        p.wait()


def test_create_time_is_psutils() -> None:
    """Pid records written by agents that used psutil must still match."""
    import psutil

    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        ours = procinfo.create_time(p.pid)
        assert ours is not None
        assert abs(ours - psutil.Process(p.pid).create_time()) < 1e-6
        assert procinfo.same_process(p.pid, ours)
        assert procinfo.is_live(p.pid)
        # Another process's start (a reused pid) is not this one.
        assert not procinfo.same_process(p.pid, ours - 1.0)
        assert not procinfo.same_process(p.pid, ours + 1.0)
        rec = procinfo.PidRecord(p.pid, p.pid, ours, ["sleep", "30"])
        assert procinfo.matches(rec)
    finally:
        p.kill()
        _wait(lambda: procinfo._state_and_group(p.pid) in (None, (b"Z", p.pid)),
              "never a zombie")
    # A zombie is no longer the process (nor live), unless asked for; a reaped one is gone.
    assert not procinfo.same_process(p.pid, ours)
    assert procinfo.same_process(p.pid, ours, zombie=True)
    assert not procinfo.same_process(p.pid, ours + 1.0, zombie=True)
    assert not procinfo.is_live(p.pid)
    p.wait()
    assert not procinfo.same_process(p.pid, ours, zombie=True)
    assert procinfo.create_time(p.pid) is None
    assert not procinfo.matches(rec)
