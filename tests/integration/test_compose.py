"""`make compose-test` as a pytest test: slow (minutes), so deselected by default.

Run it with `pytest -m slow tests/integration/test_compose.py`; it skips unless a Docker
engine answers (deploy/compose-test.sh installs and starts one; this test does not).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _engine() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compose_cluster_survives_faults() -> None:
    if not _engine():
        pytest.skip("no Docker engine running (make compose-test starts one)")
    proc = subprocess.run(["bash", str(ROOT / "deploy" / "compose-test.sh"), "test"], cwd=ROOT,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=1700)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
