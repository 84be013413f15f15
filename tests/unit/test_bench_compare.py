"""The pure parts of `make bench-compare`: medians, best peer, ratios, the table, peer
discovery reporting a missing peer, and reading the crash program's records."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.measure.crash import crash_latencies, starts_recorded
from bench.measure.table import (
    HACONTROL,
    Row,
    RowSpec,
    ahead,
    best_peer,
    format_table,
    median,
    pct,
    ratio,
    row_summary,
)
from bench.peers.base import PeerStatus, npm_peer, pip_peer


def test_pct_nearest_rank() -> None:
    xs = [float(x) for x in range(1, 101)]
    assert pct(xs, 0.5) == 50.0
    assert pct(xs, 0.99) == 99.0
    assert pct([7.0], 0.99) == 7.0


def test_median_ignores_failed_runs_and_is_none_without_any() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None, None]) is None
    assert median([]) is None


def test_best_peer_follows_the_direction_and_excludes_hacontrol() -> None:
    meds = {HACONTROL: 1.0, "etcd": 5.0, "other": 3.0, "gone": None}
    assert best_peer("higher", meds) == ("etcd", 5.0)
    assert best_peer("lower", meds) == ("other", 3.0)
    assert best_peer("lower", {HACONTROL: 1.0, "gone": None}) is None


def test_best_peer_tie_goes_to_the_first_listed() -> None:
    assert best_peer("lower", {"pm2": 2.0, "circus": 2.0}) == ("pm2", 2.0)


def test_ratio_and_who_leads() -> None:
    assert ratio(2.0, 4.0) == 0.5
    assert ratio(None, 4.0) is None
    assert ratio(2.0, None) is None
    assert ratio(2.0, 0.0) == float("inf")
    assert ratio(0.0, 0.0) == 1.0
    assert ahead("lower", float("inf")) is False
    assert ahead("higher", 1.5) is True
    assert ahead("higher", 0.5) is False
    assert ahead("lower", 0.5) is True
    assert ahead("lower", 1.0) is True  # a tie is not behind
    assert ahead("lower", None) is None


def _row() -> Row:
    row = Row(RowSpec("w", "writes/s", "ops/s", "higher", ".0f", "job PUT"))
    for hac, etcd in ((900.0, 1000.0), (1100.0, 2000.0), (1000.0, 1500.0)):
        row.add(HACONTROL, hac)
        row.add("etcd", etcd)
    return row


def test_row_summary_medians_and_ratio_to_best_peer() -> None:
    sm = row_summary(_row())
    assert sm["medians"] == {HACONTROL: 1000.0, "etcd": 1500.0}
    assert sm["best_peer"] == "etcd"
    assert sm["ratio_to_best_peer"] == pytest.approx(1000 / 1500)
    assert sm["hacontrol_ahead"] is False
    assert sm["runs"][HACONTROL] == [900.0, 1100.0, 1000.0]


def test_a_peer_at_zero_shows_hacontrol_behind_not_a_blank() -> None:
    row = Row(RowSpec("cpu", "idle CPU", "%", "lower", ".2f"))
    row.add(HACONTROL, 5.0)
    row.add("supervisord", 0.0)
    sm = row_summary(row)
    assert sm["ratio_infinite"] is True
    assert sm["ratio_to_best_peer"] is None  # JSON has no infinity
    assert sm["hacontrol_ahead"] is False
    line = format_table([row], [HACONTROL, "supervisord"]).splitlines()[2]
    assert line.split()[-5:] == ["0.00", "inf", "supervisord", "lower", "no"]


def test_table_shows_medians_ratio_direction_and_every_run() -> None:
    missing = Row(RowSpec("p", "restart p50", "ms", "lower", ".1f"))
    missing.add(HACONTROL, 40.0)
    missing.add("pm2", None)  # measured but timed out
    text = format_table([_row(), missing], [HACONTROL, "etcd", "pm2"])
    lines = text.splitlines()
    assert lines[0].split() == ["figure", HACONTROL, "etcd", "pm2", "ratio", "better", "lead"]
    w = next(ln for ln in lines if ln.startswith("writes/s [job PUT]"))
    assert w.split()[-7:] == ["1000", "1500", "-", "0.67x", "etcd", "higher", "no"]
    p = next(ln for ln in lines if ln.startswith("restart p50"))
    assert p.split()[-6:] == ["40.0", "-", "-", "-", "lower", "-"]
    assert "hacontrol [900 1100 1000]; etcd [1000 2000 1500]" in text
    assert "pm2 [-]" in text


def test_pip_peer_missing_without_install_is_reported_not_faked(tmp_path: Path) -> None:
    logged: list[str] = []
    st = pip_peer("supervisord", "supervisor", "supervisord", tmp_path, False, logged.append)
    assert not st.available
    assert st.exe is None
    assert st.missing is not None and "--no-install" in st.missing
    assert st.describe().startswith("supervisord: missing (")
    assert logged == []  # nothing was attempted
    assert not (tmp_path / "venv").exists()


def test_npm_peer_missing_without_install(tmp_path: Path) -> None:
    st = npm_peer("pm2", "pm2", tmp_path, False, lambda _m: None)
    assert not st.available
    assert st.missing is not None


def test_peer_found_in_the_cache_is_available(tmp_path: Path) -> None:
    exe = tmp_path / "npm" / "bin" / "pm2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    meta = tmp_path / "npm" / "lib" / "node_modules" / "pm2" / "package.json"
    meta.parent.mkdir(parents=True)
    meta.write_text('{"version": "7.0.4"}')
    st = npm_peer("pm2", "pm2", tmp_path, False, lambda _m: None)
    if st.missing and "node not found" in st.missing:
        pytest.skip("no node on this machine")
    assert st == PeerStatus("pm2", exe=exe, version="7.0.4")
    assert st.available


def test_crash_records_give_exit_to_next_start(tmp_path: Path) -> None:
    rec = tmp_path / "crash.txt"
    rec.write_text("S 10.000 1\nE 10.200 1\nS 10.250 2\nE 10.500 2\nS 10.512 3\nbroken\n")
    assert crash_latencies(rec) == pytest.approx([50.0, 12.0])
    assert starts_recorded(rec) == 3
    assert crash_latencies(tmp_path / "absent") == []


def test_process_cpu_counts_another_process_below_a_clock_tick() -> None:
    """The idle row reads a daemon's CPU to the nanosecond: a child that burns a few
    milliseconds shows them, not 0 or a whole 10 ms tick."""
    import subprocess
    import sys
    import time

    from bench.measure.procs import process_cpu_s

    busy = "import time\nt = time.thread_time()\nwhile time.thread_time() - t < 0.003: pass\n" \
           "print('done', flush=True)\ntime.sleep(30)\n"
    p = subprocess.Popen([sys.executable, "-c", busy], stdout=subprocess.PIPE)
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"done"
        used = process_cpu_s(p.pid)
        # Its interpreter's start-up plus the 3 ms loop, and not in whole 10 ms ticks.
        assert 0.003 <= used < 5.0
        assert round(used, 2) != used
        time.sleep(0.05)
        assert process_cpu_s(p.pid) - used < 0.002  # asleep now: its clock stands
    finally:
        p.kill()
        p.wait()
