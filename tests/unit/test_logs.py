"""`--log-format json`: one JSON object per line with time, level, logger, message and the
caller's extra fields; the text format stays the default."""

from __future__ import annotations

import io
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hacontrol.observe.logs import configure_logging
from hacontrol.raft.keys import generate_secret


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_the_fields_and_the_extras(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    log = logging.getLogger("hacontrol.test")
    log.info("placed %d of %s", 3, "web\nnext", extra={"job": "web", "obj": object()})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # a newline inside a message does not split a record
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "placed 3 of web\nnext"
    assert first["level"] == "info" and first["logger"] == "hacontrol.test"
    assert first["job"] == "web" and first["obj"].startswith("<object")
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "msg" not in first and "args" not in first
    assert second["level"] == "error" and "ValueError: boom" in second["exception"]


def test_text_stays_the_default(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    logging.getLogger("hacontrol.test").warning("hello")
    assert out.getvalue().rstrip().endswith("WARNING hacontrol.test: hello")
    with pytest.raises(ValueError):
        configure_logging("info", "xml", out)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_server_started_with_log_format_json_writes_json_lines(tmp_path: Path) -> None:
    (tmp_path / "s").write_text(generate_secret())
    (tmp_path / "s").chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hacontrol", "server", "--id", "c1", "--data-dir",
         str(tmp_path / "d"), "--raft", f"127.0.0.1:{_port()}", "--api",
         f"127.0.0.1:{_port()}", "--insecure-http", "--secret-file", str(tmp_path / "s"),
         "--log-format", "json"], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stderr is not None
    seen: list[dict[str, object]] = []
    buf = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not any(
                str(r.get("message", "")).startswith("replica c1:") for r in seen):
            ready, _, _ = select.select([proc.stderr], [], [], 1.0)
            if not ready:
                assert proc.poll() is None, "the server exited"
                continue
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            seen += [json.loads(line) for line in lines if line.strip()]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    started = [r for r in seen if str(r["message"]).startswith("replica c1:")]
    assert started and started[0]["logger"] == "hacontrol.server"
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in seen)


def test_dev_hands_the_log_format_to_every_daemon(tmp_path: Path) -> None:
    from hacontrol.cli.dev import DevCluster, DevConfig
    from hacontrol.cli.main import build_parser

    dev = DevCluster(DevConfig(data_dir=tmp_path, replicas=3, agents=2, log_format="json"))
    dev._plan()
    children = dev.servers + dev.agents
    assert len(children) == 5
    for child in children:
        args = build_parser().parse_args(child.argv[3:])  # past "python -m hacontrol"
        assert args.log_format == "json", child.argv
