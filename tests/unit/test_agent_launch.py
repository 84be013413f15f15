"""The start path's pure parts: identity through setpriv, finding the program, /proc
parsing. Starting real processes is covered by tests/integration/test_supervisor*.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from hacontrol.agent.launch import (
    USER_GATE_SCRIPT,
    StartRequest,
    _stat_comm_state,
    export_script,
    find_program,
    shell_safe_env,
    with_identity,
)


def request(uid: int | None = None, gid: int | None = None,
            groups: list[int] | None = None) -> StartRequest:
    return StartRequest(command=["sleep", "1"], env={}, cwd=None, uid=uid, gid=gid,
                        groups=groups, umask=None, cgroup_procs=[], rlimits=[])


def test_no_identity_change_runs_the_command_as_is() -> None:
    assert with_identity(request(), "/usr/bin/setpriv") == (["sleep", "1"], (None, None, None))


def test_identity_goes_through_setpriv_so_subprocess_can_vfork() -> None:
    argv, ids = with_identity(request(65534, 65534, [65534]), "/usr/bin/setpriv")
    assert argv == ["/usr/bin/setpriv", "--groups=65534", "--regid=65534", "--reuid=65534",
                    "--", "/bin/sh", "-c", USER_GATE_SCRIPT, "hacontrol-start", "sleep", "1"]
    assert ids == (None, None, None)


def test_empty_group_list_clears_supplementary_groups() -> None:
    argv, _ = with_identity(request(1000, 1000, []), "/usr/bin/setpriv")
    assert "--clear-groups" in argv and not any(a.startswith("--groups") for a in argv)


def test_without_setpriv_subprocess_sets_the_identity() -> None:
    argv, ids = with_identity(request(65534, 65534, [65534]), None)
    assert argv == ["sleep", "1"] and ids == (65534, 65534, [65534])


def test_find_program(tmp_path: Path) -> None:
    script = tmp_path / "prog"
    script.write_text("#!/bin/sh\n")
    assert find_program("prog", str(tmp_path), None) is None  # not executable
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    assert find_program("prog", str(tmp_path), None) == str(script)
    assert find_program("./prog", "", str(tmp_path)) == os.path.join(str(tmp_path), "./prog")
    assert find_program(str(tmp_path / "missing"), "", None) is None
    assert find_program("sh", "/bin:/usr/bin", None) is not None


def test_stat_parsing_keeps_names_with_parentheses_and_spaces() -> None:
    assert _stat_comm_state(b"123 (a (b) c) Z 1 2 3") == (b"a (b) c", b"Z")
    assert _stat_comm_state(b"") == (None, None)


def test_export_script_recreates_any_value_in_a_shell(tmp_path: Path) -> None:
    import subprocess
    env = {"A": "it's $HOME `id` \\ \" \n next line", "B": "", "C_1": "''"}
    script = tmp_path / "env.sh"
    script.write_bytes(export_script(env))
    out = subprocess.run(["/bin/sh", "-c", f". {script}; env -0"], env={"PATH": "/usr/bin:/bin"},
                         capture_output=True, check=True).stdout.decode()
    got = dict(item.split("=", 1) for item in out.split("\0") if "=" in item)
    assert {k: got.get(k) for k in env} == env


def test_only_shell_names_take_the_shell_path() -> None:
    assert shell_safe_env({"PATH": "/bin", "_X1": "1"})
    assert not shell_safe_env({"my.var": "1"})
    assert not shell_safe_env({"1X": "1"})


def test_a_direct_start_is_for_cgroup_v1_without_rlimits_sockets_or_pids_limit() -> None:
    from hacontrol.agent.direct import usable
    assert usable("cgroup-v1", False, False, False)
    assert usable(None, False, False, False)  # no cgroup and no limits at all
    assert not usable("cgroup-v2", False, False, False)  # a thread cannot leave its domain
    assert not usable("rlimit", False, False, False)
    assert not usable("cgroup-v1", True, False, False)  # rlimits: through the gate
    assert not usable("cgroup-v1", False, True, False)  # sockets: the exec wrapper
    assert not usable("cgroup-v1", False, False, True)  # the thread would count


def test_the_agents_own_identity_is_no_change_so_subprocess_keeps_vfork() -> None:
    from hacontrol.agent.direct import _change
    me = request(os.geteuid(), os.getegid(), [os.getegid(), *os.getgroups()])
    assert _change(me) == (None, None, None)
    other = os.geteuid() + 1
    assert _change(request(other, os.getegid(), [5]))[0] == other
    assert _change(request(None, None, [os.getegid() + 12345])) == \
        (None, None, [os.getegid() + 12345])
