"""What compose.yaml reads (chaos/cluster/compose_files.py): secrets as files owned by the
user that reads each in its container, and env files that hold no secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from chaos.cluster.compose_files import (
    CONTROLLER_UID,
    OWNERS,
    PUBLIC_NAMES,
    remove_compose_files,
    write_compose_files,
)
from hacontrol.raft.keys import generate_secret
from hacontrol.tls.pki import create_ca, create_cert
from hacontrol.tls.roles import Role

ROOT = Path(__file__).resolve().parents[2]


def test_secrets_are_private_files_and_the_env_files_hold_none(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners other than ourselves need root (else a container chowns them)")
    tls = tmp_path / "tls"
    tls.mkdir()
    ca = create_ca(tls)
    for role in Role:
        create_cert(ca, role, tls)
    secret, token = generate_secret(), "t0ken" * 8
    env_dir = tmp_path / "env"
    write_compose_files(env_dir, secret, token, tls, "HACONTROL_LOG_LEVEL=debug\n")
    sdir = env_dir / "secrets"
    for name, uid in OWNERS.items():
        st = (sdir / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o400, uid), name
    for name in PUBLIC_NAMES:
        assert stat.S_IMODE((sdir / name).stat().st_mode) == 0o444
    assert (sdir / "token").read_text() == token and (sdir / "token").stat().st_uid == CONTROLLER_UID
    assert (sdir / "server-key.pem").read_bytes() == (tls / "server-key.pem").read_bytes()
    for name in ("controller.env", "agent.env"):
        text = (env_dir / name).read_text()
        assert token not in text and secret not in text and "PRIVATE KEY" not in text
        assert "HACONTROL_TLS_KEY_FILE=/run/secrets/" in text
        assert stat.S_IMODE((env_dir / name).stat().st_mode) == 0o600
    # Every secret compose.yaml names is one written here.
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, entry in compose["secrets"].items():
        assert (sdir / Path(entry["file"]).name).exists(), name
        assert Path(entry["file"]).name == name
    remove_compose_files(env_dir)
    assert not list(sdir.iterdir())


def test_without_tls_the_controllers_are_told_so_and_placeholders_exist(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners other than ourselves need root (else a container chowns them)")
    write_compose_files(tmp_path, generate_secret(), "tok", None)
    assert "HACONTROL_INSECURE_HTTP=1" in (tmp_path / "controller.env").read_text()
    assert (tmp_path / "secrets" / "server-key.pem").read_bytes() == b""
