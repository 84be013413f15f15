"""``hacontrol operator snapshot save|inspect|restore`` over an in-memory transport."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import msgpack
import pytest

from hacontrol.cli.commands import operator_snapshot
from hacontrol.cli.main import main
from hacontrol.cli.transport import MockTransport, Request, Response, TransportError
from hacontrol.state import backup
from hacontrol.state import snapshot as snap
from hacontrol.state.dispatch import IdempotencyTable

from .test_snapshot_restore import populated

ADDR = "http://10.9.0.1:8101"


def snapshot_file() -> bytes:
    f, _ = populated(jobs=3)
    state = snap.encode(f.m.store, IdempotencyTable())
    return backup.pack(state, f.m.index, 2, backup.counts_of(msgpack.unpackb(state)),
                       created_at=1.0e9, source="c2")


class Api:
    def __init__(self, served: bytes) -> None:
        self.served = served
        self.seen: list[Request] = []

    def handle(self, request: Request) -> Response:
        self.seen.append(request)
        if request.method == "GET":
            return Response(200, {"Content-Type": "application/octet-stream"}, self.served)
        return Response(200, {"Content-Type": "application/json"}, json.dumps(
            {"index": 99, "restored": {"jobs": 3, "namespaces": 2}}).encode())

    def run(self, *argv: str) -> int:
        return main([*argv, "--addr", ADDR, "--token", "sekrit"],
                    transport=MockTransport(self.handle))


def test_save_writes_a_private_file_and_inspect_reads_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = snapshot_file()
    api = Api(data)
    path = tmp_path / "backup.snap"
    assert api.run("operator", "snapshot", "save", str(path)) == 0
    assert path.read_bytes() == data
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert api.seen[0].headers["Authorization"] == "Bearer sekrit"
    assert "Jobs" in capsys.readouterr().out
    assert api.run("operator", "snapshot", "inspect", str(path), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["counts"]["jobs"] == 3 and shown["term"] == 2 and shown["size"] == len(data)
    assert len(api.seen) == 1  # inspect reads only the file
    assert api.run("operator", "snapshot", "inspect", str(path)) == 0
    out = capsys.readouterr().out
    assert "Jobs" in out and "Tokens" in out and "c2" in out


def test_a_damaged_answer_is_not_saved(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    api = Api(snapshot_file()[:-3])
    path = tmp_path / "backup.snap"
    assert api.run("operator", "snapshot", "save", str(path)) == 1
    assert "truncated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_inspect_and_restore_refuse_a_damaged_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str) -> None:
    data = bytearray(snapshot_file())
    if damage == "flip":
        data[len(data) // 3] ^= 0x10
    elif damage == "truncate":
        del data[len(data) // 2:]
    else:
        data.clear()
    path = tmp_path / "bad.snap"
    path.write_bytes(bytes(data))
    api = Api(b"")
    for command in ("inspect", "restore"):
        assert api.run("operator", "snapshot", command, str(path)) == 1
        err = capsys.readouterr().err
        assert "bad.snap" in err and "nothing was done" in err, err
    assert api.seen == []  # refused before anything was sent


def test_restore_sends_the_file_once_with_one_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = snapshot_file()
    path = tmp_path / "b.snap"
    path.write_bytes(data)
    api = Api(b"")
    assert api.run("operator", "snapshot", "restore", str(path)) == 0
    (sent,) = api.seen
    assert sent.method == "PUT" and sent.url.endswith("/v1/operator/snapshot")
    assert sent.body == data and sent.headers["Content-Type"] == "application/octet-stream"
    assert sent.headers["Idempotency-Key"]
    assert "at index 99" in capsys.readouterr().out


def test_restore_follows_a_pending_answer_on_the_replica_that_took_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "b.snap"
    path.write_bytes(snapshot_file())
    seen: list[Request] = []
    polls = iter([202, 202, 200])

    def handle(request: Request) -> Response:
        seen.append(request)
        pending = {"pending": True, "receipt": "r1", "poll": "/v1/operator/snapshot/restore/r1"}
        if request.method == "PUT":
            return Response(202, {"Content-Type": "application/json", "Retry-After": "0"},
                            json.dumps(pending).encode())
        status = next(polls)
        body = pending if status == 202 else {"index": 77, "restored": {"jobs": 3}}
        return Response(status, {"Content-Type": "application/json", "Retry-After": "0"},
                        json.dumps(body).encode())

    rc = main(["operator", "snapshot", "restore", str(path), "--addr", ADDR,
               "--token", "sekrit"], transport=MockTransport(handle))
    assert rc == 0
    assert "at index 77" in capsys.readouterr().out
    put, *gets = seen
    assert put.method == "PUT" and len(gets) == 3  # sent once, then waited on
    for get in gets:
        assert get.method == "GET" and get.url == f"{ADDR}/v1/operator/snapshot/restore/r1"
        # The restore may have replaced the token: the receipt is what the poll needs.
        assert "Authorization" not in get.headers


def test_restore_says_so_when_the_replica_that_took_it_goes_away(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(operator_snapshot, "POLL_MISSES", 1)  # no wait between misses
    path = tmp_path / "b.snap"
    path.write_bytes(snapshot_file())

    def handle(request: Request) -> Response:
        if request.method == "GET":
            raise TransportError("Connection refused")
        return Response(202, {"Content-Type": "application/json", "Retry-After": "0"},
                        json.dumps({"pending": True, "poll": "/v1/operator/snapshot/"
                                    "restore/r1"}).encode())

    rc = main(["operator", "snapshot", "restore", str(path), "--addr", ADDR,
               "--token", "sekrit"], transport=MockTransport(handle))
    assert rc == 1
    err = capsys.readouterr().err
    assert "may or may not have applied" in err and "before restoring again" in err, err
