"""Raft frames sent stored are still zlib streams that every peer (and zlib) inflates."""

from __future__ import annotations

import os
import zlib

import pytest

from hacontrol.raft.safety import STORED_BELOW, _BoundedZlib, stored_zlib


@pytest.mark.parametrize("size", [0, 1, 100, 0xFFFE, 0xFFFF, 0x10000, 3 * 0xFFFF + 7])
def test_stored_frames_inflate_to_the_same_bytes(size: int) -> None:
    data = os.urandom(size)
    frame = stored_zlib(data)
    assert zlib.decompress(frame) == data
    assert _BoundedZlib(1 << 22).decompress(frame) == data
    assert len(frame) == size + 2 + 5 * max(1, -(-size // 0xFFFF)) + 4


def test_small_frames_go_stored_and_large_ones_deflated() -> None:
    z = _BoundedZlib(1 << 22)
    small, large = b"a" * STORED_BELOW, b"a" * (STORED_BELOW + 1)
    assert z.compress(small, 3) == stored_zlib(small)
    assert len(z.compress(large, 3)) < 100
    assert z.decompress(z.compress(large, 3)) == large


def test_the_inflate_cap_still_holds_for_stored_frames() -> None:
    with pytest.raises(ValueError):
        _BoundedZlib(1000).decompress(stored_zlib(b"x" * 2000))
