"""Planted faults exist for the chaos suite only: refused unless a test enables them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hacontrol import planted
from hacontrol.raft.keys import generate_secret


def test_refused_without_the_test_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(planted.ALLOW_ENV, raising=False)
    assert planted.check_plant(None) is None
    with pytest.raises(SystemExit, match="refused outside tests"):
        planted.check_plant("stale-read")
    monkeypatch.setenv(planted.ALLOW_ENV, "1")
    assert planted.check_plant("stale-read") == "stale-read"
    with pytest.raises(SystemExit, match="unknown"):
        planted.check_plant("bogus")


def test_server_refuses_to_start_with_a_plant(tmp_path) -> None:
    (tmp_path / "s").write_text(generate_secret())
    (tmp_path / "t").write_text("tok")
    for name in ("s", "t"):
        (tmp_path / name).chmod(0o600)
    env = {k: v for k, v in __import__("os").environ.items() if k != planted.ALLOW_ENV}
    out = subprocess.run([sys.executable, "-m", "hacontrol", "server", "--id", "c1",
                          "--data-dir", str(tmp_path / "d"), "--raft", "127.0.0.1:1",
                          "--api", "127.0.0.1:1", "--secret-file", str(tmp_path / "s"),
                          "--token-file", str(tmp_path / "t"), "--plant", "early-ack",
                          "--insecure-http"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode != 0
    assert "refused outside tests" in out.stderr
    assert not (tmp_path / "d" / "raft.journal").exists()


def test_each_fault_is_a_wrapper_around_the_real_controller() -> None:
    from hacontrol.controller.replica import Controller

    assert planted.controller_class(None) is Controller
    wrapped = {name: planted.controller_class(name) for name in planted.PLANTS}
    assert all(cls is not Controller and issubclass(cls, Controller)
               for cls in wrapped.values())
    # Each overrides only the path it breaks.
    assert "read" in vars(wrapped[planted.STALE_READ])
    assert "write" in vars(wrapped[planted.EARLY_ACK])
    assert "__init__" in vars(wrapped[planted.QUOTA_SKIP])
