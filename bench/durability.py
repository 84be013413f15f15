"""Durability figures for bench/controllers.py: fsync on vs --unsafe-no-fsync, and the disk.

Group commit should keep the fsync-on throughput at >= 80 % of fsync-off; the disk's own
fdatasync latency is the floor no durable write can go under.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_FSYNC_RATIO = 0.8


def pct(xs: list[float], p: float) -> float:
    """Nearest-rank percentile of `xs` (p in 0..1)."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(p * len(s) + 0.5)) - 1))]


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def measure_fsync_floor(directory: Path, n: int = 500) -> dict[str, float]:
    """p50/p99 of appending 4 KiB and fdatasync'ing it: what no durable write can beat."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fsync-floor"
    block = os.urandom(4096)
    lat: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    return {"p50_ms": pct(lat, 0.50), "p99_ms": pct(lat, 0.99), "n": n}


def summarize_durability(results: list[Any]) -> dict[str, Any]:
    """Medians over runs of each run's RunResult durability figures."""
    on = [r.throughput for r in results]
    off = [r.throughput_nofsync for r in results if r.throughput_nofsync]
    return {
        "fsync_floor_ms": {k: med([r.fsync_floor[k] for r in results if r.fsync_floor])
                           for k in ("p50_ms", "p99_ms")},
        "leader_latency_ms": {
            "fsync": {k: med([r.latency["leader"][k] for r in results]) for k in
                      ("p50_ms", "p99_ms")},
            "no_fsync": {k: med([r.latency_nofsync[k] for r in results if r.latency_nofsync])
                         for k in ("p50_ms", "p99_ms")}},
        "loaded": {
            "fsync": {k: med([t[k] for t in on if t.get(k) is not None])
                      for k in ("writes_per_s", "p50_ms", "p99_ms")},
            "no_fsync": {k: med([t[k] for t in off if t.get(k) is not None])
                         for k in ("writes_per_s", "p50_ms", "p99_ms")}},
        # Ratio per run (same run, same machine load), then the median.
        "fsync_over_no_fsync": med([r.throughput["writes_per_s"]
                                    / r.throughput_nofsync["writes_per_s"]
                                    for r in results if r.throughput_nofsync.get("writes_per_s")]),
        "target_ratio": TARGET_FSYNC_RATIO,
    }


def durability_rows(sm: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    d, runs = sm["durability"], sm["runs"]
    clients = sm["settings"]["tp_clients"]

    def per_run(get: Callable[[dict[str, Any]], float | None], spec: str) -> str:
        return " ".join(fmt(get(r), spec) for r in runs)

    def ratio(r: dict[str, Any]) -> float | None:
        off = r["throughput_nofsync"].get("writes_per_s")
        return r["throughput"]["writes_per_s"] / off if off else None

    on, off = d["loaded"]["fsync"], d["loaded"]["no_fsync"]
    lat_off = d["leader_latency_ms"]["no_fsync"]
    return [
        ("disk: 4 KiB write+fdatasync p50 (ms)", fmt(d["fsync_floor_ms"]["p50_ms"], ".3f"),
         per_run(lambda r: r["fsync_floor"].get("p50_ms"), ".3f"), "floor"),
        ("disk: 4 KiB write+fdatasync p99 (ms)", fmt(d["fsync_floor_ms"]["p99_ms"], ".3f"),
         per_run(lambda r: r["fsync_floor"].get("p99_ms"), ".3f"), ""),
        ("leader p50, --unsafe-no-fsync (ms)", fmt(lat_off["p50_ms"], ".2f"),
         per_run(lambda r: r["latency_nofsync"].get("p50_ms"), ".2f"), "compare"),
        ("leader p99, --unsafe-no-fsync (ms)", fmt(lat_off["p99_ms"], ".2f"),
         per_run(lambda r: r["latency_nofsync"].get("p99_ms"), ".2f"), ""),
        (f"{clients} clients p50/p99, fsync (ms)",
         f"{fmt(on['p50_ms'], '.1f')} / {fmt(on['p99_ms'], '.1f')}",
         per_run(lambda r: r["throughput"].get("p50_ms"), ".1f"), ""),
        (f"{clients} clients p50/p99, no fsync (ms)",
         f"{fmt(off['p50_ms'], '.1f')} / {fmt(off['p99_ms'], '.1f')}",
         per_run(lambda r: r["throughput_nofsync"].get("p50_ms"), ".1f"), ""),
        (f"API writes/s ({clients} clients), no fsync", fmt(off["writes_per_s"], ".0f"),
         per_run(lambda r: r["throughput_nofsync"].get("writes_per_s"), ".0f"), ""),
        ("writes/s fsync / no fsync", fmt(d["fsync_over_no_fsync"], ".2f"),
         per_run(ratio, ".2f"), f">= {d['target_ratio']}"),
    ]
