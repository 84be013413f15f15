"""deploy/systemd: the unit files parse, their ExecStart lines (with each host's env file)
are command lines the real parser accepts, the hardening is there, and systemd itself
accepts them (`systemd-analyze verify`, where installed)."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hacontrol.cli.main import build_parser

SYSTEMD = Path(__file__).parents[2] / "deploy" / "systemd"
HOSTS = sorted((SYSTEMD / "hosts").iterdir())
UNITS = {"server": SYSTEMD / "hacontrol-server.service",
         "agent": SYSTEMD / "hacontrol-agent.service"}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file; a key given twice keeps both values, in order."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = logical + line, ""
        if m := re.fullmatch(r"\[([A-Za-z]+)\]", line):
            current = sections.setdefault(m.group(1), {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None and re.fullmatch(r"[A-Za-z]+", key.strip()), line
        current.setdefault(key.strip(), []).append(value.strip())
    assert not logical, f"{path}: a continuation runs off the end"
    return sections


def parse_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env


def command_line(exec_start: str, env: dict[str, str], unit: str) -> list[str]:
    """ExecStart as systemd runs it: specifiers, then ${VAR} as one word and $VAR split
    on whitespace (systemd.service(5), "Command lines")."""
    line = exec_start.replace("%S", "/var/lib").replace("%d", f"/run/credentials/{unit}") \
        .replace("%t", "/run")
    assert "%" not in line, f"an unexpected specifier in {line}"
    words: list[str] = []
    for word in shlex.split(line):
        if m := re.fullmatch(r"\$([A-Z_]+)", word):
            words += env[m.group(1)].split()
        else:
            words.append(re.sub(r"\$\{([A-Z_]+)\}", lambda v: env[v.group(1)], word))
    return words


def parsed(kind: str, host: Path) -> argparse.Namespace:
    service = parse_unit(UNITS[kind])["Service"]
    argv = command_line(service["ExecStart"][0], parse_env(host / f"{kind}.env"),
                        UNITS[kind].name)
    assert argv[0] == "/opt/hacontrol/bin/hacontrol"
    return build_parser().parse_args(argv[1:])


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.name)
def test_the_server_unit_runs_a_tls_replica_the_parser_accepts(host: Path) -> None:
    args = parsed("server", host)
    others = {h.name for h in HOSTS} - {host.name}
    assert args.command == "server" and not args.insecure_http
    assert len(args.peer) == len(others) == 2
    assert str(args.data_dir) == "/var/lib/hacontrol"  # StateDirectory=hacontrol
    assert str(args.secret_file).startswith("/run/credentials/")
    assert args.tls_ca and args.tls_cert and args.log_format == "json"
    assert str(args.tls_key) == "/run/hacontrol/server-key.pem"  # copied there: see below
    assert args.token_file is None  # ACLs are bootstrapped once, by hand


@pytest.mark.parametrize("host", HOSTS, ids=lambda h: h.name)
def test_the_agent_unit_joins_with_an_introduction_token(host: Path) -> None:
    args = parsed("agent", host)
    assert args.command == "agent" and args.token_file is None
    assert str(args.intro_token_file) == "/etc/hacontrol/intro-token"
    assert len(args.controllers) == 3 and all(c.startswith("https://") for c in args.controllers)
    assert args.advertise.startswith("https://") and args.tls_key
    assert str(args.data_dir) == "/var/lib/hacontrol-agent"


def test_three_hosts_give_three_distinct_replicas_and_nodes() -> None:
    assert len(HOSTS) == 3
    ids = {parsed("server", h).id for h in HOSTS}
    nodes = {parsed("agent", h).name for h in HOSTS}
    assert len(ids) == len(nodes) == 3


def test_both_units_reload_with_sighup() -> None:
    for unit in UNITS.values():
        assert parse_unit(unit)["Service"]["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert parse_unit(UNITS["agent"])["Service"]["ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def key_copy(line: str) -> tuple[str, str]:
    """(source, destination) of the server unit's key copy: run as root ("+"), leaving a
    file only the service user may read."""
    argv = shlex.split(line)
    assert argv[0] == "+/usr/bin/install", line
    assert argv[1:7] == ["-m", "0600", "-o", "hacontrol", "-g", "hacontrol"], line
    return argv[7], argv[8]


def test_the_server_copies_its_key_at_start_and_before_every_reload() -> None:
    """A renewed certificate comes with a new key: the key the daemon reads is copied from
    root's file at every start and again before the SIGHUP of every reload (not a
    LoadCredential= copy, made only at start)."""
    s = parse_unit(UNITS["server"])["Service"]
    assert not any("tls" in c for c in s.get("LoadCredential", []))
    (start,) = s["ExecStartPre"]
    copy, hup = s["ExecReload"]
    assert key_copy(start) == key_copy(copy) == (
        "/etc/hacontrol/tls/server-key.pem", "%t/hacontrol/server-key.pem")
    assert hup == "/bin/kill -HUP $MAINPID"
    assert s["RuntimeDirectory"] == ["hacontrol"] and s["RuntimeDirectoryMode"] == ["0700"]


def test_the_server_is_confined() -> None:
    s = parse_unit(UNITS["server"])["Service"]
    want = {"User": "hacontrol", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
            "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
            "StateDirectory": "hacontrol", "RuntimeDirectory": "hacontrol", "UMask": "0077"}
    assert {k: s[k][-1] for k in want} == want


def test_the_agent_keeps_only_what_it_needs_to_run_jobs() -> None:
    s = parse_unit(UNITS["agent"])["Service"]
    assert set(s["CapabilityBoundingSet"][-1].split()) == {
        "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"}  # as compose
    assert s["NoNewPrivileges"] == ["yes"] and s["KillMode"] == ["process"]
    assert s["Delegate"] == ["yes"] and "ProtectControlGroups" not in s
    assert s["ProtectSystem"] == ["full"] and s["PrivateTmp"] == ["yes"]


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("HACONTROL_TEST_ALL") == "1":
            pytest.fail("HACONTROL_TEST_ALL=1 but systemd-analyze is missing (apt: systemd)")
        pytest.skip("systemd-analyze is not installed (apt: systemd)")
    # verify checks that the program exists: point it at this environment's hacontrol.
    program = Path(sys.executable).parent / "hacontrol"
    if not program.exists():
        program = Path(shutil.which("hacontrol") or "/bin/true")
    for path in UNITS.values():
        (tmp_path / path.name).write_text(
            path.read_text().replace("/opt/hacontrol/bin/hacontrol", str(program)))
    out = subprocess.run([analyze, "verify", *(str(tmp_path / p.name) for p in UNITS.values())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
