"""A restore's state decoded before its entry applies (state/prepare.py) and the Raft
thread holding the entry back meanwhile (raft/prepare_gate.py), fed plain data."""

from __future__ import annotations

import pickle
import threading
import zlib
from typing import Any

import msgpack
import pytest

from hacontrol.raft import prepare_gate
from hacontrol.state import backup
from hacontrol.state import commands as C
from hacontrol.state.handlers.restore import restamp
from hacontrol.state.machine import StateMachine
from hacontrol.state.prepare import Preparer, body_key, decode_restore, unpack_state
from hacontrol.state.services import rebuild

from .test_services import WEB, Agents
from .test_snapshot_restore import file_of, populated, restore_args


def _unpacked(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", unpack_state(raw)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def _reference(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:
        return type(exc).__name__, str(exc)


def test_rows_unpacked_one_at_a_time_are_what_unpackb_gives_or_fail_alike() -> None:
    f, _ = populated(jobs=6)
    state = zlib.decompress(backup.unpack(file_of(f.m)).body)
    tables = msgpack.unpackb(state)
    variants = [state, state + b"\x00", state[:-3], b"", b"\x90", msgpack.packb([1, 2]),
                msgpack.packb({**tables, "jobs": None}),
                msgpack.packb({**tables, "jobs": {"a": 1}}),
                msgpack.packb({1: 2, **tables}), msgpack.packb({b"jobs": [], "v": 1})]
    for raw in variants:
        assert _unpacked(raw) == _reference(raw), raw[:40]
    assert _unpacked(state)[1] == tables


def _twins(jobs: int) -> tuple[StateMachine, StateMachine, int]:
    """Two machines holding one state, and the index of the next entry."""
    f, _ = populated(jobs=jobs)
    twin = StateMachine()
    twin.restore(f.m.snapshot())
    return f.m, twin, f.index + 1


def _restore(m: StateMachine, args: dict[str, Any], index: int) -> dict[str, Any]:
    return m.apply(C.Command(C.STATE_RESTORE, 5000.0, args, f"r{index}").encode(), index)


def test_a_prepared_restore_swaps_the_decoded_store_in_and_ends_as_inline() -> None:
    source, _ = populated(jobs=8, prefix="src")
    args = restore_args(file_of(source.m))
    inline, ahead, at = _twins(3)
    assert ahead.preparer.wait(args["state"], 30)
    decoded = ahead.preparer.peek(args["state"])
    assert isinstance(decoded, tuple)
    assert _restore(inline, args, at) == _restore(ahead, args, at)
    assert inline.digest() == ahead.digest()
    # Nothing was decoded inside the apply: the store the thread built is the one in use,
    # and it is handed out once.
    assert ahead.store.jobs is decoded[0].jobs and ahead.store.allocs is decoded[0].allocs
    assert len(ahead.preparer) == 0
    # The same body again decodes again (the adopted store has moved on since).
    again = _restore(ahead, args, at + 1)
    assert again["ok"] and ahead.store.jobs is not decoded[0].jobs


@pytest.mark.parametrize("body", [b"not deflate", zlib.compress(b"\x81\xa1v\x07")])
def test_a_refused_state_is_refused_alike_prepared_or_inline(body: bytes) -> None:
    args = {"state": body, "index": 1}
    inline, ahead, at = _twins(2)
    ahead.preparer.wait(body, 30)
    first = _restore(inline, args, at)
    assert not first["ok"] and first["error"]["field"] == "state"
    assert _restore(ahead, args, at) == first
    assert inline.digest() == ahead.digest()
    refused = decode_restore(body)
    assert not isinstance(refused, tuple) and refused.to_dict() == first["error"]


def test_the_restamped_registry_is_a_rebuild_at_the_restore_index() -> None:
    w = Agents("n1", "n2")
    w.put_job("web", count=2, **WEB)
    w.settle()
    w.apply(C.JOB_SCALE, {"namespace": "default", "name": "web", "count": 1})
    outcome = decode_restore(restore_args(file_of(w.m))["state"])
    assert isinstance(outcome, tuple)
    store = outcome[0]
    assert store.registry.index  # a service, so the check below means something
    restamp(store.registry, 9000)
    fresh = rebuild(store, 9000)
    assert fresh.index == store.registry.index and fresh.endpoints == store.registry.endpoints
    assert fresh.last_index == store.registry.last_index == 9000


def test_the_preparer_decodes_once_wakes_its_waiters_and_keeps_a_bounded_number() -> None:
    bodies = [restore_args(file_of(populated(jobs=n)[0].m))["state"] for n in (1, 2, 3)]
    p = Preparer(kept=2)
    woken = threading.Event()
    if not p.want(bodies[0], wake=woken.set):
        assert woken.wait(30)
    assert p.want(bodies[0])  # ready, not started again
    first = p.peek(bodies[0])
    assert p.wait(bodies[0], 1) and p.peek(bodies[0]) is first
    for body in bodies[1:]:
        p.wait(body, 30)
    assert len(p) == 2 and p.peek(bodies[0]) is None  # the oldest was dropped
    assert p.take(bodies[2]) is not None and p.take(bodies[2]) is None
    assert not p.busy() and len(p) == 1
    p.unused_keep_s = 0.0  # what nobody took is dropped in time
    assert not p.busy() and len(p) == 0


def _entry(command: bytes, index: int) -> tuple[bytes, int, int]:
    """A pysyncobj log entry calling the node's replicated method with `command`."""
    return b"\x00" + pickle.dumps((0, (command,))), index, 1


def test_the_gate_holds_back_the_first_large_entry_not_ready() -> None:
    f, _ = populated(jobs=40)
    body = restore_args(file_of(f.m))["state"] + b"\x00" * prepare_gate.PREPARE_BYTES
    big = C.Command(C.STATE_RESTORE, 1.0, {"state": body, "index": 1}).encode()
    small = C.Command(C.NOOP, 1.0, {}).encode()
    asked: list[int] = []

    def ready(command: bytes, index: int) -> bool:
        asked.append(index)
        assert command == big
        return index != 7

    entries = [_entry(small, 5), _entry(big, 6), _entry(big, 7), _entry(small, 8),
               (b"\x01", 9, 1)]
    assert prepare_gate.hold_back(entries, ready) == 7 and asked == [6, 7]
    assert prepare_gate.hold_back(entries[:2], ready) is None
    assert prepare_gate.unwrap(b"\x02" + pickle.dumps((0, (big,)))) is None  # membership


def test_the_machine_holds_a_restore_back_until_its_state_is_decoded() -> None:
    f, _ = populated(jobs=20)
    args = restore_args(file_of(f.m))
    raw = C.Command(C.STATE_RESTORE, 1.0, args, "k").encode()
    m = StateMachine()
    woken = threading.Event()
    if not m.ready_to_apply(raw, 4, woken.set):
        assert woken.wait(30)
    assert m.ready_to_apply(raw, 4, woken.set)
    assert m.apply(raw, 4)["ok"]
    assert m.ready_to_apply(raw, 5) and len(m.preparer) == 0  # a repeat: nothing to decode
    assert m.ready_to_apply(C.Command(C.NOOP, 1.0, {}).encode(), 5)
    assert m.ready_to_apply(b"garbage", 6)  # refused by apply, quickly


def test_a_peer_says_when_it_has_decoded_and_the_proposer_waits_for_that() -> None:
    body = restore_args(file_of(populated(jobs=3)[0].m))["state"]
    peer = StateMachine()
    told: list[str] = []
    done = threading.Event()
    peer.prepare_restore(body, lambda key: (told.append(key), done.set()))
    assert done.wait(30) and told == [body_key(body)]
    peer.prepare_restore(body, told.append)  # already decoded: told at once
    assert told == [body_key(body)] * 2

    proposer = Preparer()
    proposer.share = lambda _body: 2  # handed to two peers
    acks = threading.Thread(target=lambda: [proposer.ack(body_key(body), p) for p in "ab"])
    acks.start()
    assert proposer.wait(body, 30, peers_wait=60)  # returns once both said so
    acks.join()
    assert proposer.wait(body, 30, peers_wait=0)
