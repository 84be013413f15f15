"""The power-loss filesystem on a real FUSE mount: after a power cut only what was synced stays.

The writer runs as its own process and is SIGKILLed before the cut, as a replica is.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.lazyfs.mount import PowerLossMount, is_mounted, unavailable

from .harness import skip_or_fail


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[PowerLossMount]:
    reason = unavailable()
    if reason:
        skip_or_fail(f"power-loss filesystem unavailable: {reason}")
    m = PowerLossMount(tmp_path / "backing", tmp_path / "mnt", tmp_path / "fs.log")
    m.mount()
    try:
        yield m
    finally:
        m.power_cut()
        assert not is_mounted(m.mountpoint)


def _writer_then_kill(mnt: Path, body: str) -> None:
    """Run `body` (with `mnt`, os and mmap in scope) in a process, then SIGKILL it."""
    code = "import os, mmap, sys\nmnt = sys.argv[1]\n" + textwrap.dedent(body) + \
        "\nprint('done', flush=True)\nsys.stdin.read()\n"
    p = subprocess.Popen([sys.executable, "-c", code, str(mnt)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "done"
    p.kill()
    p.wait(10)


def _cut(m: PowerLossMount) -> None:
    m.power_cut()
    m.mount()


def test_write_fsync_write_power_loss_keeps_the_synced(mount: PowerLossMount) -> None:
    _writer_then_kill(mount.mountpoint, """
        fd = os.open(f"{mnt}/f", os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"synced")
        os.fsync(fd)
        d = os.open(mnt, os.O_RDONLY)
        os.fsync(d)
        os.write(fd, b"+unsynced")
    """)
    assert (mount.mountpoint / "f").read_bytes() == b"synced+unsynced"  # a crash keeps it
    _cut(mount)
    assert (mount.mountpoint / "f").read_bytes() == b"synced"


def test_mmap_write_survives_with_msync_only(mount: PowerLossMount) -> None:
    _writer_then_kill(mount.mountpoint, """
        with open(f"{mnt}/j", "wb") as f:
            f.write(bytes(8192))
            f.flush()
            os.fsync(f.fileno())
        d = os.open(mnt, os.O_RDONLY)
        os.fsync(d)
        f = open(f"{mnt}/j", "r+b")
        mm = mmap.mmap(f.fileno(), 0)
        mm[0:6] = b"msync!"
        mm.flush()  # msync(MS_SYNC)
        mm[4096:4104] = b"no msync"
    """)
    _cut(mount)
    data = (mount.mountpoint / "j").read_bytes()
    assert len(data) == 8192
    assert data[:6] == b"msync!"
    assert data[4096:4104] == bytes(8)


def test_rename_needs_a_directory_fsync(mount: PowerLossMount) -> None:
    _writer_then_kill(mount.mountpoint, """
        def sync_dir():
            d = os.open(mnt, os.O_RDONLY)
            os.fsync(d)
            os.close(d)
        for name in ("kept", "lost"):
            with open(f"{mnt}/{name}.tmp", "wb") as f:
                f.write(name.encode())
                f.flush()
                os.fsync(f.fileno())
        sync_dir()  # both temp files now exist on disk
        os.rename(f"{mnt}/kept.tmp", f"{mnt}/kept")
        sync_dir()
        os.rename(f"{mnt}/lost.tmp", f"{mnt}/lost")
        with open(f"{mnt}/new", "wb") as f:
            f.write(b"never named on disk")
            f.flush()
            os.fsync(f.fileno())
    """)
    assert sorted(os.listdir(mount.mountpoint)) == ["kept", "lost", "new"]
    _cut(mount)
    # The last rename and the creation of "new" never reached the disk.
    assert sorted(os.listdir(mount.mountpoint)) == ["kept", "lost.tmp"]
    assert (mount.mountpoint / "kept").read_bytes() == b"kept"
    assert (mount.mountpoint / "lost.tmp").read_bytes() == b"lost"


def test_a_stalled_fsync_waits_and_a_power_cut_ends_it(mount: PowerLossMount) -> None:
    code = textwrap.dedent("""
        import os, sys
        fd = os.open(sys.argv[1] + "/f", os.O_RDWR | os.O_CREAT, 0o644)
        d = os.open(sys.argv[1], os.O_RDONLY)
        os.fsync(d)
        print("named", flush=True)
        sys.stdin.readline()
        os.write(fd, b"stalled")
        print("writing", flush=True)
        os.fsync(fd)
        print("synced", flush=True)
    """)
    p = subprocess.Popen([sys.executable, "-c", code, str(mount.mountpoint)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdin is not None and p.stdout is not None
    try:
        assert p.stdout.readline().strip() == "named"
        mount.stall()
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "writing"
        with pytest.raises(subprocess.TimeoutExpired):
            p.wait(1.0)  # the fsync waits on the stalled disk
        assert (mount.mountpoint / "f").read_bytes() == b"stalled"  # reads go on
        p.kill()  # inside a stalled fsync it dies only with its FUSE connection
    finally:
        _cut(mount)
        p.wait(10)
    assert p.stdout.read() == ""
    assert (mount.mountpoint / "f").read_bytes() == b""  # named on disk, never synced


def test_backend_power_cut_reverts_replicas_and_restarts_them(tmp_path: Path) -> None:
    """A cluster on power-loss mounts: a power cut leaves the replica down on its synced disk,
    start() brings it back, and teardown leaves no mount or process behind."""
    reason = unavailable()
    if reason:
        skip_or_fail(f"power-loss filesystem unavailable: {reason}")
    from chaos.checker.journal import read_log
    from chaos.cluster.base import ClusterSpec
    from chaos.cluster.local import LocalBackend

    from .harness import http, pid_alive, wait_for

    b = LocalBackend()
    try:
        members = b.setup(ClusterSpec(replicas=3, workdir=tmp_path, power_loss_fs=True))
        c1 = members[0]
        assert c1.api_url is not None and is_mounted(c1.data_dir)
        fs_pids = [m.pid for m in b._mounts.values()]

        def ready() -> bool:
            try:
                return http("GET", f"{c1.api_url}/v1/status", token=b.token,
                            timeout=1).status == 200
            except OSError:
                return False

        wait_for(ready, 30)
        wait_for(lambda: (c1.data_dir / "raft.journal").exists(), 10)
        b.power_cut(["c1"])
        assert not b.alive("c1")
        assert is_mounted(c1.data_dir)  # the disk is back, as synced, for the checkers
        assert read_log(c1.data_dir).error is None
        assert b.power_cuts()["c1"] == 1
        b.start("c1")
        wait_for(ready, 30)
    finally:
        b.teardown()
    assert not any(is_mounted(m.data_dir) for m in members)
    assert not [p for p in fs_pids if pid_alive(p)]
