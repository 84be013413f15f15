"""Durability is on unless a test switch turns part of it off, and those switches are
refused outside tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hacontrol import planted
from hacontrol.controller.replica import Controller
from hacontrol.raft.config import NO_FSYNC, VOTE_NO_FSYNC, Durability, ReplicaConfig
from hacontrol.raft.keys import generate_secret


def test_durable_by_default() -> None:
    config = ReplicaConfig("c1", "127.0.0.1:1", [], Path("/tmp/x"), "s" * 32)
    assert config.durability == Durability() and config.durability.durable
    assert Durability.choose() == Durability()


def test_each_switch_turns_off_its_part() -> None:
    assert Durability.choose(unsafe_no_fsync=True) == Durability(False, False)
    assert Durability.choose(plant=NO_FSYNC) == Durability(fsync_journal=False)
    assert Durability.choose(plant=VOTE_NO_FSYNC) == Durability(fsync_meta=False)
    assert Durability.choose(plant="stale-read").durable


def test_storage_plants_and_the_flag_are_refused_outside_tests(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(planted.ALLOW_ENV, raising=False)
    for name in planted.STORAGE_PLANTS:
        with pytest.raises(SystemExit, match="refused outside tests"):
            planted.check_plant(name)
    assert planted.check_unsafe_no_fsync(False) is False
    with pytest.raises(SystemExit, match="refused outside tests"):
        planted.check_unsafe_no_fsync(True)
    monkeypatch.setenv(planted.ALLOW_ENV, "1")
    assert planted.check_plant(NO_FSYNC) == NO_FSYNC
    assert planted.check_plant(VOTE_NO_FSYNC) == VOTE_NO_FSYNC
    assert planted.check_unsafe_no_fsync(True) is True


def test_storage_plants_run_the_real_controller() -> None:
    assert all(planted.controller_class(p) is Controller for p in planted.STORAGE_PLANTS)


def test_server_refuses_to_start_without_fsync_outside_tests(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(generate_secret())
    (tmp_path / "t").write_text("tok")
    for f in ("s", "t"):
        (tmp_path / f).chmod(0o600)  # so that the refusal tested is the fsync one
    env = {k: v for k, v in os.environ.items() if k != planted.ALLOW_ENV}
    out = subprocess.run([sys.executable, "-m", "hacontrol", "server", "--id", "c1",
                          "--data-dir", str(tmp_path / "d"), "--raft", "127.0.0.1:1",
                          "--api", "127.0.0.1:1", "--secret-file", str(tmp_path / "s"),
                          "--token-file", str(tmp_path / "t"), "--insecure-http",
                          "--unsafe-no-fsync"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    assert "refused outside tests" in out.stderr
    assert not (tmp_path / "d" / "raft.journal").exists()
