"""The TLS package: a CA, role certificates, the contexts built from them, and the role
each side reads from the other, over real sockets on loopback."""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.cli.main import main
from hacontrol.tls.context import TLSConfig, client_context, server_context
from hacontrol.tls.files import ExposedFile, check_private, private_dir, write_private
from hacontrol.tls.pki import CertFiles, create_ca, create_cert
from hacontrol.tls.roles import Role, peer_roles
from hacontrol.tls.settings import TLSSettingsError, daemon_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = create_ca(d)
    for role in Role:
        create_cert(ca, role, d)
    other = d / "other"
    other.mkdir()
    create_cert(create_ca(other), Role.SERVER, other)
    return d


def config(d: Path, name: str, ca: Path | None = None) -> TLSConfig:
    return TLSConfig(ca or d / "ca.pem", d / f"{name}.pem", d / f"{name}-key.pem")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_are_private_and_certificates_say_their_role(pki: Path) -> None:
    assert mode(pki / "ca-key.pem") == 0o600
    for role in Role:
        assert mode(pki / f"{role.value}-key.pem") == 0o600
        cert = ssl._ssl._test_decode_cert(str(pki / f"{role.value}.pem"))  # type: ignore[attr-defined]
        assert peer_roles(cert) == {role}


def test_nothing_is_overwritten(pki: Path) -> None:
    with pytest.raises(FileExistsError):
        create_ca(pki)
    with pytest.raises(FileExistsError):
        create_cert(CertFiles(pki / "ca.pem", pki / "ca-key.pem"), Role.AGENT, pki)


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    write_private(key, b"secret")
    check_private(key)
    os.chmod(key, 0o644)
    with pytest.raises(ExposedFile, match="0644.*chmod 600"):
        check_private(key)


def test_private_dir_is_0700_even_when_it_existed(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o755)
    private_dir(d)
    assert mode(d) == 0o700


def test_daemon_refuses_to_start_without_tls_or_insecure_flag(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(TLSSettingsError, match="--insecure-http"):
        daemon_tls(None, None, None, insecure=False, who="hacontrol server")
    assert daemon_tls(None, None, None, insecure=True, who="x") is None
    with pytest.raises(TLSSettingsError, match="exclude"):
        daemon_tls(pki / "ca.pem", None, None, insecure=True, who="x")
    key = tmp_path / "server-key.pem"
    key.write_bytes((pki / "server-key.pem").read_bytes())
    os.chmod(key, 0o644)
    with pytest.raises(TLSSettingsError, match="0644"):
        daemon_tls(pki / "ca.pem", pki / "server.pem", key, insecure=False, who="x")
    ok = daemon_tls(pki / "ca.pem", pki / "server.pem", pki / "server-key.pem",
                    insecure=False, who="x")
    assert ok is not None and ok.key == pki / "server-key.pem"


# --- handshakes over loopback --------------------------------------------------------


class Listener:
    """A TLS server on loopback accepting one connection per `accept()`; remembers the
    roles of the last peer and the error of the last failed handshake."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.roles: set[Role] | None = None
        self.error: Exception | None = None

    def accept_one(self) -> threading.Thread:
        def run() -> None:
            conn, _ = self.sock.accept()
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    self.roles = peer_roles(tls.getpeercert())
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                self.error = exc
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t


@pytest.fixture
def listen() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for x in made:
        x.sock.close()


def handshake(listener: Listener, client: ssl.SSLContext, role: Role) -> bytes:
    t = listener.accept_one()
    try:
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname=role.hostname) as tls:
            return tls.recv(2)
    finally:
        t.join(5)


def test_mutual_tls_reads_both_roles(pki: Path, listen: list[Listener]) -> None:
    agent_side = Listener(server_context(config(pki, "agent"), require_client_cert=True))
    listen.append(agent_side)
    controller = client_context(config(pki, "server"))
    assert handshake(agent_side, controller, Role.AGENT) == b"ok"
    assert agent_side.roles == {Role.SERVER}


def test_an_agent_certificate_cannot_serve_as_a_controller(pki: Path,
                                                           listen: list[Listener]) -> None:
    impostor = Listener(server_context(config(pki, "agent"), require_client_cert=False))
    listen.append(impostor)
    agent_client = client_context(config(pki, "agent"))
    with pytest.raises(ssl.SSLCertVerificationError, match="server.hacontrol"):
        handshake(impostor, agent_client, Role.SERVER)


def test_a_cli_certificate_cannot_serve_at_all(pki: Path, listen: list[Listener]) -> None:
    impostor = Listener(server_context(config(pki, "cli"), require_client_cert=False))
    listen.append(impostor)
    with pytest.raises(ssl.SSLError):
        handshake(impostor, client_context(TLSConfig(pki / "ca.pem")), Role.CLI)


def test_a_controller_from_another_ca_is_refused(pki: Path, listen: list[Listener]) -> None:
    agent_side = Listener(server_context(config(pki, "agent"), require_client_cert=True))
    listen.append(agent_side)
    stranger = client_context(config(pki / "other", "server", ca=pki / "other" / "ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(agent_side, stranger, Role.AGENT)
    assert agent_side.roles is None


def test_cli_creates_a_ca_and_certificates(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tls", "ca", "create", "--dir", str(tmp_path)]) == 0
    assert main(["tls", "cert", "create", "--agent", "--ca", str(tmp_path / "ca.pem"),
                 "--ca-key", str(tmp_path / "ca-key.pem"), "--dir", str(tmp_path),
                 "--name", "n1", "--host", "node1.example", "--host", "10.0.0.7"]) == 0
    assert mode(tmp_path / "n1-key.pem") == 0o600
    cert = ssl._ssl._test_decode_cert(str(tmp_path / "n1.pem"))  # type: ignore[attr-defined]
    sans = set(cert["subjectAltName"])
    assert {("DNS", "agent.hacontrol"), ("DNS", "node1.example"),
            ("IP Address", "10.0.0.7")} <= sans
    assert main(["tls", "ca", "create", "--dir", str(tmp_path)]) == 1
    assert "already exists" in capsys.readouterr().err
    os.chmod(tmp_path / "ca-key.pem", 0o640)
    assert main(["tls", "cert", "create", "--cli", "--ca", str(tmp_path / "ca.pem"),
                 "--ca-key", str(tmp_path / "ca-key.pem"), "--dir", str(tmp_path)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_server_refuses_to_start_without_tls_settings(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x" * 64)
    (tmp_path / "t").write_text("tok")
    for name in ("s", "t"):
        (tmp_path / name).chmod(0o600)
    out = subprocess.run([sys.executable, "-m", "hacontrol", "server", "--id", "c1",
                          "--data-dir", str(tmp_path / "d"), "--raft", "127.0.0.1:1",
                          "--api", "127.0.0.1:1", "--secret-file", str(tmp_path / "s"),
                          "--token-file", str(tmp_path / "t")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "TLS settings are required" in out.stderr and "--insecure-http" in out.stderr
    assert not (tmp_path / "d").exists()


def run_daemon(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hacontrol", *argv], capture_output=True,
                          text=True, timeout=60)


def test_server_refuses_a_tls_key_others_can_read(pki: Path, tmp_path: Path) -> None:
    for name in ("s", "t"):
        (tmp_path / name).write_text("x" * 64)
        (tmp_path / name).chmod(0o600)
    key = tmp_path / "server-key.pem"
    key.write_bytes((pki / "server-key.pem").read_bytes())
    key.chmod(0o644)
    out = run_daemon("server", "--id", "c1", "--data-dir", str(tmp_path / "d"),
                     "--raft", "127.0.0.1:1", "--api", "127.0.0.1:1",
                     "--secret-file", str(tmp_path / "s"), "--token-file", str(tmp_path / "t"),
                     "--tls-ca", str(pki / "ca.pem"), "--tls-cert", str(pki / "server.pem"),
                     "--tls-key", str(key))
    assert out.returncode != 0
    assert f"TLS key file {key} has mode 0644" in out.stderr
    assert not (tmp_path / "d").exists()


def test_server_and_agent_refuse_a_token_file_others_can_read(tmp_path: Path) -> None:
    (tmp_path / "s").write_text("x" * 64)
    (tmp_path / "s").chmod(0o600)
    (tmp_path / "t").write_text("tok")
    (tmp_path / "t").chmod(0o644)
    out = run_daemon("server", "--id", "c1", "--data-dir", str(tmp_path / "d"),
                     "--raft", "127.0.0.1:1", "--api", "127.0.0.1:1", "--insecure-http",
                     "--secret-file", str(tmp_path / "s"), "--token-file", str(tmp_path / "t"))
    assert out.returncode != 0 and "token file" in out.stderr and "0644" in out.stderr
    out = run_daemon("agent", "--name", "n1", "--data-dir", str(tmp_path / "a"),
                     "--controllers", "http://127.0.0.1:1", "--token-file", str(tmp_path / "t"))
    assert out.returncode != 0 and "token file" in out.stderr and "0644" in out.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "a").exists()
