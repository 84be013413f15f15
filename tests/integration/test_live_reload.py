"""SIGHUP on real processes: a TLS replica and an agent started with `--config FILE` take a
changed file without a restart (log level, limits, agent labels, attributes and capacity),
rotate their certificates for new connections, name in the log each change that must wait
for a restart, and keep running on a file they cannot use."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.tls.context import TLSConfig, client_context
from hacontrol.tls.pki import CertFiles, create_cert
from hacontrol.tls.roles import Role

from .harness import Cluster, Proc, free_ports, wait_for

SERVER_FILE = 'log-level = "info"\nmax-jobs = 100\n'


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("reload") / "cluster"
    root.mkdir(parents=True)
    (root / "server.toml").write_text(SERVER_FILE)
    c = Cluster(root, size=1, tls=True,
                extra_server_args=["--config", str(root / "server.toml")])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def hup(proc: Proc) -> None:
    os.kill(proc.pid, signal.SIGHUP)


def logged(proc: Proc, text: str, after: int = 0, timeout: float = 15) -> str:
    """Wait until `text` is in the process's log past offset `after`."""
    def find() -> str | None:
        tail = proc.log.read_text(errors="replace")[after:]
        return tail if text in tail else None
    return wait_for(find, timeout, what=f"{text!r} in {proc.name}'s log")


def log_size(proc: Proc) -> int:
    return len(proc.log.read_text(errors="replace"))


def presented(port: int, role: Role, ca: Path) -> bytes:
    """The certificate a new TLS connection to 127.0.0.1:port is shown (DER)."""
    ctx = client_context(TLSConfig(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=role.hostname) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return der


def rotate(c: Cluster, role: Role) -> bytes:
    """A new certificate for `role` from the cluster's CA, moved over the files the daemon
    was started with (as a renewal job does); its DER."""
    d = c.root / "tls"
    new = create_cert(CertFiles(d / "ca.pem", d / "ca-key.pem"), role, d,
                      name=f"{role.value}-{os.urandom(4).hex()}")
    os.replace(new.key, d / f"{role.value}-key.pem")
    os.replace(new.cert, d / f"{role.value}.pem")
    return ssl.PEM_cert_to_DER_cert((d / f"{role.value}.pem").read_text())


def test_a_replica_reloads_its_settings_and_certificate(cluster: Cluster) -> None:
    r = cluster.replicas[0]
    conf = cluster.root / "server.toml"
    # Log level: "reload: done" is a debug line, shown only once the level is debug.
    at = log_size(r.proc)
    hup(r.proc)
    logged(r.proc, "reload: TLS now uses", at)
    assert "reload: done" not in r.proc.log.read_text()[at:]
    conf.write_text(SERVER_FILE.replace('"info"', '"debug"'))
    at = log_size(r.proc)
    hup(r.proc)
    logged(r.proc, "reload: log-level now 'debug' (was 'info')", at)
    logged(r.proc, "reload: done", at)

    # A limit, live: a second job is refused once max-jobs is 1.
    assert cluster.write("PUT", "/v1/jobs/default/one", {"command": ["sleep", "60"],
                                                          "count": 0}).status == 200
    conf.write_text('log-level = "debug"\nmax-jobs = 1\ncompaction-entries = 100\n'
                    'max-body-bytes = 2048\nheartbeat-grace = 5\n')
    at = log_size(r.proc)
    hup(r.proc)
    logged(r.proc, "reload: heartbeat-grace now 5.0 (was 3.0)", at)
    # What cannot change live is named, one line per setting.
    text = logged(r.proc, "reload: done", at)
    for key in ("compaction-entries", "max-body-bytes"):
        assert text.count(f"reload: {key} changed") == 1, text
    assert "applies at the next restart" in text
    refused = cluster.api("PUT", "/v1/jobs/default/two", {"command": ["sleep", "60"],
                                                         "count": 0})
    assert refused.status == 409 and refused.body["error"]["code"] == "limit_exceeded"

    # A file it cannot use changes nothing and stops nothing.
    conf.write_text('log-level = "debug"\nmax-jobs = 1\nmax-jbos = 5\n')
    at = log_size(r.proc)
    hup(r.proc)
    logged(r.proc, "unknown key 'max-jbos' (did you mean 'max-jobs'?)", at)
    assert r.proc.alive()
    assert cluster.api("GET", "/v1/status").status == 200

    # The log format too: the next lines are JSON objects.
    conf.write_text('log-level = "debug"\nmax-jobs = 1\nlog-format = "json"\n')
    at = log_size(r.proc)
    hup(r.proc)
    logged(r.proc, '"message": "reload: done"', at)

    # Certificate rotation: new connections get the new certificate, no restart.
    before = presented(r.api_port, Role.SERVER, cluster.root / "tls" / "ca.pem")
    new = rotate(cluster, Role.SERVER)
    assert new != before
    pid = r.proc.pid
    hup(r.proc)
    wait_for(lambda: presented(r.api_port, Role.SERVER, cluster.root / "tls" / "ca.pem")
             == new, 15, what="the rotated certificate served")
    assert r.proc.pid == pid and r.proc.alive()
    assert cluster.api("GET", "/v1/status").status == 200


def test_an_agent_reloads_its_labels_attributes_and_certificate(cluster: Cluster) -> None:
    conf = cluster.root / "agent.toml"
    port = free_ports(1)[0]
    conf.write_text(f'name = "n1"\ndata-dir = "{cluster.root / "n1"}"\n'
                    f'controllers = ["{cluster.replicas[0].api}"]\nport = {port}\n'
                    'cpu = 2\nmemory-mb = 1024\nlabel = {zone = "a"}\n'
                    'attribute = {rack = "r1"}\n')
    argv = [sys.executable, "-m", "hacontrol", "agent", "--config", str(conf),
            "--token-file", str(cluster.root / "token"), *cluster.tls_args("agent")]
    proc = Proc("n1", argv, cluster.root / "n1.log")
    proc.start()
    cluster.agents["n1"] = proc  # stopped with the cluster

    def node() -> dict | None:
        resp = cluster.api("GET", "/v1/nodes/n1")
        return resp.body["node"] if resp.status == 200 else None
    first = wait_for(node, 30, what="node n1 registered")
    assert first["labels"] == {"zone": "a"} and first["attributes"]["rack"] == "r1"
    assert first["attributes"]["os"] == "linux"  # detected ones stay

    conf.write_text(conf.read_text().replace('zone = "a"', 'zone = "b", disk = "ssd"')
                    .replace('rack = "r1"', 'rack = "r2"').replace("cpu = 2", "cpu = 3")
                    .replace(f"port = {port}", f"port = {port + 1}"))
    at = log_size(proc)
    hup(proc)
    wait_for(lambda: (n := node()) is not None and n["labels"] == {"zone": "b", "disk": "ssd"}
             and n["attributes"]["rack"] == "r2" and n["capacity"]["cpu"] == 3.0, 15,
             what="the new labels, attributes and capacity at the controllers")
    text = logged(proc, "reload: TLS now uses", at)
    assert text.count("reload: port changed") == 1, text

    before = presented(port, Role.AGENT, cluster.root / "tls" / "ca.pem")
    new = rotate(cluster, Role.AGENT)
    assert new != before
    hup(proc)
    wait_for(lambda: presented(port, Role.AGENT, cluster.root / "tls" / "ca.pem") == new,
             15, what="the agent's rotated certificate")
    assert proc.alive()
    # Its link to the controllers still works (a new connection, with the new certificate).
    assert wait_for(lambda: (n := node()) is not None and n["status"] == "ready", 15)


def test_the_server_unit_reloads_a_renewed_certificate_with_a_new_key(tmp_path: Path) -> None:
    """As the shipped server unit runs it (deploy/systemd): the daemon reads a copy of the
    key that ExecStartPre made; a renewal writes a new certificate and a new key over
    root's files. A SIGHUP alone (the copy as it was: what a LoadCredential= copy did)
    refuses the pair and keeps the running certificate; the unit's ExecReload lines, run as
    `systemctl reload` runs them, copy the key again and signal: new connections get the
    new certificate, from the same process."""
    import grp
    import pwd
    import shlex
    import shutil
    import subprocess

    from tests.unit.test_systemd_units import UNITS, key_copy, parse_unit

    service = parse_unit(UNITS["server"])["Service"]
    c = Cluster(tmp_path / "cluster", size=1, tls=True)
    runtime = tmp_path / "run"
    (runtime / "hacontrol").mkdir(parents=True, mode=0o700)
    install = shutil.which("install")
    assert install is not None

    def here(path: str) -> str:
        return path.replace("/etc/hacontrol/tls", str(c.root / "tls")).replace(
            "%t", str(runtime))

    def copy_key(line: str) -> None:
        """The unit's `+/usr/bin/install ... -o hacontrol` as this user, on these paths."""
        src, dst = key_copy(line)
        subprocess.run([install, "-m", "0600", "-o", pwd.getpwuid(os.getuid()).pw_name,
                        "-g", grp.getgrgid(os.getgid()).gr_name, here(src), here(dst)],
                       check=True, timeout=30)

    (start,) = service["ExecStartPre"]
    copy_key(start)
    r = c.replicas[0]
    at = r.proc.argv.index("--tls-key")
    r.proc.argv[at + 1] = here("%t/hacontrol/server-key.pem")
    ca = c.root / "tls" / "ca.pem"
    try:
        c.start()
        before = presented(r.api_port, Role.SERVER, ca)
        new = rotate(c, Role.SERVER)
        at = log_size(r.proc)
        hup(r.proc)
        logged(r.proc, "reload: TLS files not loaded", at)
        assert presented(r.api_port, Role.SERVER, ca) == before
        copy, signal_line = service["ExecReload"]
        pid = r.proc.pid
        copy_key(copy)
        subprocess.run(shlex.split(signal_line.replace("$MAINPID", str(pid))), check=True,
                       timeout=30)
        wait_for(lambda: presented(r.api_port, Role.SERVER, ca) == new, 15,
                 what="the renewed certificate served")
        assert r.proc.pid == pid and r.proc.alive()
        assert c.api("GET", "/v1/status").status == 200
    finally:
        c.stop()
