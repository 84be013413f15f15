"""An allocation's cgroup directories survive their compact keeping: what goes in comes
back out, whether the hierarchies' directories share one name (as the agent makes them) or
not (a record written by another layout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hacontrol.agent.cgroups import MODE_V1, MODE_V2, AllocationCgroup


@pytest.mark.parametrize("paths", [
    {c: f"/sys/fs/cgroup/{c}/hacontrol/a1.0123abcd" for c in ("memory", "cpu", "pids")},
    {"memory": "/sys/fs/cgroup/memory/hacontrol/a1.x", "pids": "/sys/fs/cgroup/pids/other/b2"},
    {"x": "/sys/fs/cgroup/pids/hacontrol/leftover"},
    {"unified": "/sys/fs/cgroup/hacontrol/a1.x"},
    {"memory": "/"},
    {"memory": "/a", "pids": "/b/a"},
    {},
])
def test_what_goes_in_comes_back_out(paths: dict[str, str]) -> None:
    cg = AllocationCgroup(MODE_V1, paths)
    assert cg.record() == paths
    assert cg.paths == {k: Path(v) for k, v in paths.items()}
    assert cg.procs_files() == [os.path.join(v, "cgroup.procs") for v in paths.values()]
    assert AllocationCgroup.from_record(MODE_V1, cg.record()).record() == paths


def test_a_rename_keeps_the_other_hierarchies() -> None:
    cg = AllocationCgroup(MODE_V1, {"memory": "/m/h/a", "pids": "/p/h/a"})
    cg.paths = {**cg.paths, "pids": Path("/p/h/b")}
    assert cg.record() == {"memory": "/m/h/a", "pids": "/p/h/b"}


def test_cgroups_of_one_layout_share_their_parents() -> None:
    a = AllocationCgroup(MODE_V2, {"unified": "/sys/fs/cgroup/hacontrol/a.s"})
    b = AllocationCgroup(MODE_V2, {"unified": "/sys/fs/cgroup/hacontrol/b.s"})
    assert a._parents is b._parents  # one tuple per layout, not one per allocation
    assert a.record() != b.record()
