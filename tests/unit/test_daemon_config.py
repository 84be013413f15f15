"""`--config FILE` for the daemons, and what SIGHUP does with it: the file under the command
line, errors that name the key, the sorting of changes into live and at-restart, and TLS
files loaded into running contexts (a real handshake in memory)."""

from __future__ import annotations

import argparse
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest

from hacontrol.cli import config
from hacontrol.cli.main import build_parser, main
from hacontrol.reload import Changes, ConfigError, Reloader, compare
from hacontrol.tls.context import TLSConfig, client_context, server_context
from hacontrol.tls.pki import create_ca, create_cert
from hacontrol.tls.reload import LiveContexts
from hacontrol.tls.roles import Role

SERVER = ["server", "--id", "c1", "--data-dir", "/tmp/x", "--raft", "127.0.0.1:1",
          "--api", "127.0.0.1:2", "--secret-file", "/tmp/s"]


def parse(argv: list[str]) -> argparse.Namespace:
    return config.resolve(build_parser, argv, build_parser().parse_args(argv))


def write(tmp_path: Path, text: str) -> Path:
    f = tmp_path / "hacontrol.toml"
    f.write_text(text)
    return f


def test_the_file_sets_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    f = write(tmp_path, 'log-level = "debug"\nheartbeat_grace = 5\nmax-jobs = 10\n'
                        'peer = ["c2=127.0.0.1:3=http://127.0.0.1:4"]\n'
                        'cleanup-dead-servers = true\n')
    args = parse([*SERVER, "--config", str(f)])
    assert (args.log_level, args.heartbeat_grace, args.max_jobs) == ("debug", 5.0, 10)
    assert args.peer == ["c2=127.0.0.1:3=http://127.0.0.1:4"] and args.cleanup_dead_servers
    args = parse([*SERVER, "--config", str(f), "--log-level", "error",
                  "--peer", "c3=127.0.0.1:5=http://127.0.0.1:6"])
    assert args.log_level == "error"
    # A repeatable flag on the command line replaces the file's list, not adds to it.
    assert args.peer == ["c3=127.0.0.1:5=http://127.0.0.1:6"]


def test_required_flags_may_come_from_the_file(tmp_path: Path) -> None:
    f = write(tmp_path, 'name = "n1"\ndata-dir = "/tmp/n1"\ncontrollers = "http://a:1,http://b:2"\n'
                        'label = {zone = "a", rack = "r1"}\nattribute = ["gpu=none"]\n')
    args = parse(["agent", "--config", str(f)])
    assert args.name == "n1" and args.data_dir == Path("/tmp/n1")
    assert args.controllers == ["http://a:1", "http://b:2"]
    assert dict(args.label) == {"zone": "a", "rack": "r1"} and args.attribute == [("gpu", "none")]
    with pytest.raises(ConfigError, match="--name, --data-dir, --controllers required"):
        parse(["agent", "--config", str(write(tmp_path, 'cpu = 2\n'))])


@pytest.mark.parametrize("text, message", [
    ('log-levle = "debug"\n', "unknown key 'log-levle' (did you mean 'log-level'?)"),
    ('plant = "x"\n', "unknown key 'plant'"),  # hidden test switches are not settings
    ('log-level = "loud"\n', "log-level: must be one of debug, info, warning, error"),
    ('max-jobs = 0\n', "max-jobs: must be at least 1"),
    ('insecure-http = "yes"\n', "insecure-http: expected true or false"),
    ('api = ["a:1"]\n', "api: expected a string or a number, got a list"),
    ('raft = "nope"\n', "raft: expected HOST:PORT"),
    ('log-level = \n', "not valid TOML"),
])
def test_a_bad_file_is_refused_naming_the_key(tmp_path: Path, text: str, message: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    f = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        parse([*SERVER, "--config", str(f)])
    assert message in str(exc.value) and str(f) in str(exc.value)
    assert main([*SERVER, "--config", str(f)]) == 2
    assert message in capsys.readouterr().err


def test_a_missing_file_and_a_missing_required_flag_without_a_file(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        parse([*SERVER, "--config", "/nonexistent/hacontrol.toml"])
    assert main(["server", "--id", "c1"]) == 2
    assert "--data-dir, --raft, --api, --secret-file required" in capsys.readouterr().err


def test_reread_sees_the_file_as_it_is_now(tmp_path: Path) -> None:
    f = write(tmp_path, 'log-level = "info"\n')
    args = parse([*SERVER, "--config", str(f)])
    f.write_text('log-level = "debug"\napi = "127.0.0.1:9"\n')
    again = args.reread()
    assert again.log_level == "debug"
    assert again.api == "127.0.0.1:2"  # the command line still wins
    f.write_text('bogus = 1\n')
    with pytest.raises(ConfigError, match="bogus"):
        args.reread()


def test_changes_are_sorted_into_live_and_at_restart() -> None:
    c = compare({"log-level": "info", "api": "a:1", "label": [("z", "a")], "cpu": 2.0},
                {"log-level": "debug", "api": "a:2", "label": [("z", "b")], "cpu": 2.0},
                live={"log-level", "label"})
    assert c == Changes(live={"label": ([("z", "a")], [("z", "b")]),
                              "log-level": ("info", "debug")},
                        at_restart={"api": ("a:1", "a:2")})


def test_the_reloader_applies_live_settings_and_names_the_others(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = write(tmp_path, 'log-level = "info"\nheartbeat-grace = 3\n')
    args = parse([*SERVER, "--config", str(f)])
    applied: list[tuple[Any, Changes]] = []
    r = Reloader("replica c1", args, ("log-level", "heartbeat-grace"),
                 lambda new, ch: applied.append((new.log_level, ch)), None,
                 logging.getLogger("test.reload"))
    f.write_text('log-level = "debug"\nheartbeat-grace = 3\ncompaction-entries = 100\n')
    with caplog.at_level(logging.INFO, "test.reload"):
        changes = r.reload()
    assert changes is not None and set(changes.live) == {"log-level"}
    assert set(changes.at_restart) == {"compaction-entries"}
    assert applied[0][0] == "debug"
    lines = [rec.getMessage() for rec in caplog.records]
    assert sum("compaction-entries changed (None -> 100) but cannot change while running"
               in m for m in lines) == 1
    assert any("log-level now 'debug'" in m for m in lines)
    assert r.args.compaction_entries is None  # the running value stays
    caplog.clear()
    f.write_text('log-leve = "debug"\n')
    with caplog.at_level(logging.INFO, "test.reload"):
        assert r.reload() is None
    assert any("unknown key 'log-leve'" in rec.getMessage() and rec.levelno == logging.ERROR
               for rec in caplog.records)
    assert r.args.log_level == "debug"


def _peer_cert(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """A TLS handshake in memory; the certificate the server presented (DER)."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_hostname=Role.SERVER.hostname)
    for _ in range(20):
        for side in (cli, srv):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if cli.version() is not None and srv.version() is not None:
            peer = cli.getpeercert(binary_form=True)
            assert peer is not None
            return peer
    raise AssertionError("no handshake")


def test_new_handshakes_use_the_rotated_certificate(tmp_path: Path) -> None:
    ca = create_ca(tmp_path)
    first = create_cert(ca, Role.SERVER, tmp_path, name="one")
    second = create_cert(ca, Role.SERVER, tmp_path, name="two")
    live = server_context(TLSConfig(ca.cert, first.cert, first.key), require_client_cert=False)
    client = client_context(TLSConfig(ca.cert))
    der = [ssl.PEM_cert_to_DER_cert(p.cert.read_text()) for p in (first, second)]
    assert _peer_cert(live, client) == der[0]
    contexts = LiveContexts(TLSConfig(ca.cert, first.cert, first.key), [live])
    assert "serial" in contexts.reload(TLSConfig(ca.cert, second.cert, second.key))
    assert _peer_cert(live, client) == der[1]
    # A certificate with another's key is refused before it touches the running context.
    with pytest.raises(ssl.SSLError):
        contexts.reload(TLSConfig(ca.cert, first.cert, second.key))
    assert _peer_cert(live, client) == der[1]
