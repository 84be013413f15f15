"""The chaos suite's cluster backends and fault schedules, against real processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chaos.cluster.base import ClusterSpec, Member
from chaos.cluster.cleanup import list_links, list_netns, state_dir, sweep_leftovers
from chaos.cluster.local import BackendUnavailable, LocalBackend, ProcessBackend
from chaos.cluster.netns import NetnsBackend, check_tools
from chaos.nemesis import (
    POWER_NEMESES,
    Nemesis,
    UnsupportedNemesis,
    check_supported,
    list_nemeses,
    make_schedule,
    validate_schedule,
)
from chaos.nemesis.membership import Changes, call, join_state

from .harness import http, pid_alive, require_netns, wait_for

MEMBERS3 = ["c1", "c2", "c3"]
MEMBERS5 = ["c1", "c2", "c3", "c4", "c5", "n1", "n2"]


# ---------------------------------------------------------------- schedules

def test_schedule_is_deterministic_in_the_seed() -> None:
    for name in list_nemeses():
        a = make_schedule(name, 42, 120, MEMBERS5)
        assert a == make_schedule(name, 42, 120, MEMBERS5), name
        others = [make_schedule(name, s, 120, MEMBERS5) for s in (1, 2, 3)]
        assert any(o != a for o in others), name


@pytest.mark.parametrize("name", sorted(list_nemeses()))
@pytest.mark.parametrize("members", [MEMBERS3, MEMBERS5])
def test_every_nemesis_makes_a_valid_schedule(name: str, members: list[str]) -> None:
    sched = make_schedule(name, 7, 60, members)
    assert sched, name
    validate_schedule(sched, 60, members)
    assert {w.schedule for w in sched} == {name}
    if name != "mixed":
        assert {w.nemesis for w in sched} == {name}


def test_mixed_draws_only_what_the_backend_can_do() -> None:
    sched = make_schedule("mixed", 3, 600, MEMBERS3, capabilities=LocalBackend.capabilities)
    kinds = {w.kind for w in sched}
    assert "partition" not in kinds and "loss" not in kinds
    assert len({w.nemesis for w in sched}) > 3


def test_power_cuts_plan_as_described_and_stay_out_of_mixed() -> None:
    assert POWER_NEMESES <= set(list_nemeses())
    for seed in range(20):
        assert not {w.nemesis for w in make_schedule("mixed", seed, 300, MEMBERS5)} & \
            POWER_NEMESES
    every = make_schedule("power-loss-all", 1, 120, MEMBERS5)
    assert all(w.kind == "power-loss" and w.targets == ["c1", "c2", "c3", "c4", "c5"]
               and w.end_s - w.start_s <= 2.0 for w in every)
    majority = make_schedule("power-loss-majority", 1, 120, MEMBERS5)
    assert all(len(w.targets) == 3 for w in majority)
    election = make_schedule("power-loss-election", 1, 120, MEMBERS3)
    assert all(w.kind == "power-loss-election" and 2 <= (w.size or 0) <= 4 for w in election)
    # A backend without power cuts refuses them up front.
    no_power = {"kill", "pause"}
    with pytest.raises(UnsupportedNemesis, match="power"):
        check_supported("power-loss-one", "compose", no_power)


def test_a_nemesis_the_backend_cannot_do_is_refused() -> None:
    with pytest.raises(UnsupportedNemesis, match="partition.*local backend"):
        check_supported("partition-halves", "local", LocalBackend.capabilities)
    with pytest.raises(UnsupportedNemesis, match="unknown nemesis"):
        make_schedule("no-such-thing", 1, 60, MEMBERS3)
    sched = make_schedule("netem", 1, 60, MEMBERS3)
    with pytest.raises(UnsupportedNemesis, match="loss"):
        Nemesis(LocalBackend(), sched, lambda: None, lambda ev: None)
    with pytest.raises(UnsupportedNemesis, match="load generator"):
        Nemesis(LocalBackend(), make_schedule("load-burst", 1, 60, MEMBERS3),
                lambda: None, lambda ev: None)
    # Mixed, made without capabilities: the windows the backend cannot do are redrawn,
    # reproducibly, from what it can.
    mixed = make_schedule("mixed", 5, 600, MEMBERS3)
    assert {w.kind for w in mixed} & {"partition", "loss"}
    fitted = Nemesis(LocalBackend(), mixed, lambda: None, lambda ev: None).schedule
    assert fitted == Nemesis(LocalBackend(), mixed, lambda: None, lambda ev: None).schedule
    assert [w.start_s for w in fitted] == [w.start_s for w in mixed]
    assert {w.kind for w in fitted} <= {"kill", "pause", "restart-all"}
    validate_schedule(fitted, 600, MEMBERS3)


# ------------------------------------------------------------------ helpers

def status(b: ProcessBackend, m: Member) -> dict[str, Any] | None:
    assert m.api_url is not None
    try:
        r = http("GET", f"{m.api_url}/v1/status", token=b.token, timeout=1)
    except OSError:
        return None
    return r.body if r.status == 200 else None


def leader_among(b: ProcessBackend, names: list[str]) -> str | None:
    """The replica that a majority of the cluster's replicas name, and that says so itself."""
    reps = [m for m in b.members() if m.kind == "replica"]
    votes: dict[str, int] = {}
    for m in reps:
        if m.name in names and b.alive(m.name):
            st = status(b, m)
            if st and st["leader"]:
                votes[st["leader"]] = votes.get(st["leader"], 0) + 1
    for rid, n in votes.items():
        if rid in names and n > len(reps) // 2:
            st = status(b, b.member(rid))
            if st and st["role"] == "leader":
                return rid
    return None


def converged(b: ProcessBackend) -> str | None:
    """The one leader every replica agrees on, with no other replica claiming the role."""
    sts = [status(b, m) for m in b.members() if m.kind == "replica"]
    if any(s is None for s in sts):
        return None
    leaders = {s["leader"] for s in sts if s}
    roles = [s["id"] for s in sts if s and s["role"] == "leader"]
    return roles[0] if len(leaders) == 1 and roles == list(leaders) else None


def assert_torn_down(b: ProcessBackend, pids: list[int]) -> None:
    assert not [p for p in pids if pid_alive(p)], "a member process outlived teardown"
    assert b.registry is not None
    assert not b.registry.owner_file.exists()


@pytest.fixture
def local(tmp_path: Path) -> Iterator[LocalBackend]:
    b = LocalBackend()
    try:
        yield b
    finally:
        b.teardown()


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[NetnsBackend]:
    require_netns()
    b = NetnsBackend()
    try:
        yield b
    finally:
        b.teardown()


# ------------------------------------------------------------------ local

def test_local_backend_kill_pause_nemesis_and_teardown(local: LocalBackend,
                                                       tmp_path: Path) -> None:
    members = local.setup(ClusterSpec(replicas=3, workdir=tmp_path))
    names = [m.name for m in members]
    assert names == MEMBERS3
    assert len({m.host for m in members}) == 3
    lead = wait_for(lambda: leader_among(local, names), 20, what="a leader")

    victim = next(n for n in names if n != lead)
    old_pid = local.member(victim).pid
    local.kill(victim)
    assert not local.alive(victim) and not pid_alive(old_pid)
    local.start(victim)
    assert local.alive(victim) and local.member(victim).pid != old_pid
    wait_for(lambda: status(local, local.member(victim)), 20, what="the restarted replica")

    local.pause(lead)
    assert local.paused(lead)
    wait_for(lambda: leader_among(local, [n for n in names if n != lead]), 20,
             what="a new leader while the old one is paused")
    local.resume(lead)
    wait_for(lambda: converged(local), 20, what="one leader after resume")

    # The executor on a short schedule: every fault starts, ends, and is reported.
    events: list[dict[str, Any]] = []
    sched = make_schedule("kill-leader", 1, 3.0, names, interval=(0.5, 1.0))
    nem = Nemesis(local, sched, lambda: leader_among(local, names), events.append)
    asyncio.run(nem.run(asyncio.Event()))
    assert [e["phase"] for e in events] == ["start", "end"] * len(sched)
    assert all(e["targets"] and e["targets"][0] in names for e in events)
    assert all("error" not in e for e in events), events
    assert nem.final_heal()["unexpected_dead"] == []
    assert all(local.alive(n) for n in names)
    wait_for(lambda: converged(local), 20, what="one leader after the nemesis")

    pids = [m.pid for m in local.members() if m.pid]
    local.teardown()
    local.teardown()  # idempotent
    assert_torn_down(local, pids)


def test_local_backend_adds_and_retires_replicas(local: LocalBackend, tmp_path: Path) -> None:
    members = local.setup(ClusterSpec(replicas=3, workdir=tmp_path))
    names = [m.name for m in members]
    wait_for(lambda: leader_among(local, names), 20, what="a leader")
    c4 = local.add_replica([str(m.api_url) for m in members])
    # A new id and a new address, started with --join.
    assert c4.name == "c4" and c4.host not in {m.host for m in members}
    assert "--join" in " ".join(local._proc("c4").argv)
    wait_for(lambda: join_state(c4.log_path) == "joined", 60, what="c4's join answered")
    changes = Changes(local, local.token)
    assert set(wait_for(changes.peer_table, 10, what="the peer table")) == {*names, "c4"}

    lead = wait_for(lambda: leader_among(local, [*names, "c4"]), 20, what="a leader")
    victim = next(n for n in names if n != lead)
    url = f"{local.member('c4').api_url}/v1/operator/raft/peers/{victim}"
    status, body, location = call("DELETE", url, local.token, 20)
    if status == 307 and location:  # c4 does not lead: ask the leader it names
        status, body, _ = call("DELETE", location, local.token, 20)
    assert status == 200, body
    pid = local.member(victim).pid
    local.retire(victim)
    assert victim not in [m.name for m in local.members()]
    assert [m.name for m in local.retired()] == [victim] and not pid_alive(pid)
    with pytest.raises(KeyError):
        local.start(victim)  # a removed replica is never restarted
    rest = sorted({*names, "c4"} - {victim})
    wait_for(lambda: sorted(changes.peer_table() or {}) == rest, 10, what="the voters after")
    # The next replica takes the next id, never a retired one's.
    assert local.add_replica([str(local.member(rest[0]).api_url)]).name == "c5"


def test_sweep_removes_what_a_crashed_run_left(tmp_path: Path) -> None:
    # A run that dies by SIGKILL gets no teardown; its owner file remains for the sweep.
    use_netns = True
    try:
        check_tools()
    except BackendUnavailable:
        use_netns = False
    script = textwrap.dedent(f"""
        import os, signal, subprocess
        from chaos.cluster.cleanup import Registry, run_cmd
        reg = Registry()
        if {use_netns}:
            ns = "hcx-" + reg.run_id + "-zz"
            reg.add_namespace(ns)
            run_cmd(["ip", "netns", "add", ns])
            argv = ["ip", "netns", "exec", ns, "sleep", "60"]
        else:
            argv = ["sleep", "60"]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        reg.add_pid(p.pid)
        print(reg.run_id, p.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[2], timeout=30)
        rid, pid = out.stdout.split()
        assert pid_alive(int(pid))
        assert (state_dir() / f"{rid}.json").exists()
    finally:
        sweep_leftovers()
    assert not pid_alive(int(pid))
    assert not (state_dir() / f"{rid}.json").exists()
    if use_netns:
        assert f"hcx-{rid}-zz" not in list_netns()


# ------------------------------------------------------------------ netns

def test_netns_backend_partition_loss_and_teardown(netns: NetnsBackend, tmp_path: Path) -> None:
    members = netns.setup(ClusterSpec(replicas=3, agents=1, workdir=tmp_path))
    names = [m.name for m in members if m.kind == "replica"]
    assert names == MEMBERS3
    namespaces = [netns.namespace(m.name) for m in members]
    assert all(ns in list_netns() for ns in namespaces)
    assert netns.host_link in list_links()
    # `ip netns exec` execs in place: the pid we hold is the server's own.
    st = wait_for(lambda: status(netns, members[0]), 20, what="c1's API through the bridge")
    assert st["pid"] == members[0].pid

    lead = wait_for(lambda: leader_among(netns, names), 20, what="a leader")
    rest = [n for n in names if n != lead]
    # The agent sits in both groups, as the nemesis places agents a partition leaves out.
    netns.partition([{lead, "n1"}, {*rest, "n1"}])
    new = wait_for(lambda: leader_among(netns, rest), 20, what="the majority's own leader")
    assert new != lead
    # The host reaches the cut-off replica all along.
    assert status(netns, netns.member(lead)) is not None
    netns.heal()
    wait_for(lambda: converged(netns), 20, what="one leader after the heal")

    netns.loss("c1", 30)
    assert "numgen random mod 100 < 30 drop" in netns.ruleset("c1")
    assert "numgen" not in netns.ruleset("c2")
    netns.heal()
    assert "numgen" not in netns.ruleset("c1")

    pids = [m.pid for m in netns.members() if m.pid]
    host_link = netns.host_link
    netns.teardown()
    assert_torn_down(netns, pids)
    assert not set(namespaces) & set(list_netns())
    assert netns.bridge_ns not in list_netns()
    assert host_link not in list_links()
