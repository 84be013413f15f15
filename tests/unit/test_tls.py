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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hacontrol.cli.main import main
from hacontrol.raft.keys import generate_secret
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
    (tmp_path / "s").write_text(generate_secret())
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
    (tmp_path / "s").write_text(generate_secret())
    (tmp_path / "t").write_text("x" * 64)
    for name in ("s", "t"):
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
    (tmp_path / "s").write_text(generate_secret())
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


# --- the CLI's transport ---------------------------------------------------------------


@pytest.fixture
def https_server(pki: Path) -> Iterator[Callable[[str], str]]:
    """start(role) -> the URL of an HTTPS server on loopback showing `role`'s certificate
    and answering 200 to anything."""
    import http.server

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    servers: list[http.server.HTTPServer] = []

    def start(role: str) -> str:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        ctx = server_context(config(pki, role), require_client_cert=False)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"https://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_the_cli_talks_only_to_a_controller_certificate_of_its_ca(
        pki: Path, https_server: Callable[[str], str]) -> None:
    from hacontrol.cli.transport import HttpTransport, Request, TransportError
    transport = HttpTransport(use_env_proxy=False, tls=TLSConfig(pki / "ca.pem"))
    ok = transport.handle_request(Request("GET", https_server("server") + "/v1/status"))
    assert (ok.status, ok.body) == (200, b"ok")
    with pytest.raises(TransportError, match="server.hacontrol"):
        transport.handle_request(Request("GET", https_server("agent") + "/v1/status"))
    stranger = HttpTransport(use_env_proxy=False,
                             tls=TLSConfig(pki / "other" / "ca.pem"))
    with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
        stranger.handle_request(Request("GET", https_server("server") + "/v1/status"))


def test_cli_tls_settings_from_the_environment(pki: Path, tmp_path: Path) -> None:
    from hacontrol.cli.main import tls_from_env
    assert tls_from_env({}) is None
    got = tls_from_env({"HACONTROL_CACERT": "ca.pem", "HACONTROL_CLIENT_CERT": "c.pem",
                        "HACONTROL_CLIENT_KEY": "k.pem"})
    assert got == TLSConfig(Path("ca.pem"), Path("c.pem"), Path("k.pem"))
    with pytest.raises(ValueError, match="HACONTROL_CACERT"):
        tls_from_env({"HACONTROL_CLIENT_CERT": "c.pem"})
    key = tmp_path / "cli-key.pem"
    key.write_bytes((pki / "cli-key.pem").read_bytes())
    key.chmod(0o644)
    env = {"HACONTROL_CACERT": str(pki / "ca.pem"), "HACONTROL_CLIENT_CERT":
           str(pki / "cli.pem"), "HACONTROL_CLIENT_KEY": str(key)}
    out = subprocess.run([sys.executable, "-m", "hacontrol", "node", "list"],
                         env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "0644" in out.stderr


def test_restrict_files_touches_only_our_names(tmp_path: Path) -> None:
    from hacontrol.tls.files import restrict_files
    for name in ("raft.journal", "raft.dump", "notes.txt"):
        (tmp_path / name).write_text("x")
        (tmp_path / name).chmod(0o644)
    restrict_files(tmp_path, ("raft.*",))
    assert mode(tmp_path / "raft.journal") == mode(tmp_path / "raft.dump") == 0o600
    assert mode(tmp_path / "notes.txt") == 0o644
