"""The agent's digests are hashlib's, and its comparison is an equality."""

from __future__ import annotations

import hashlib

import pytest

from hacontrol.agent.digests import compare, sha1_hex, sha256_hex


@pytest.mark.parametrize("data", [b"", b"abc", b"/var/lib/hacontrol", bytes(range(256)) * 9])
def test_the_digests_are_hashlibs(data: bytes) -> None:
    assert sha1_hex(data) == hashlib.sha1(data).hexdigest()
    assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_compare_is_equality() -> None:
    h = sha256_hex(b"token")
    assert compare(h, h)
    assert compare(h, "".join(h))  # an equal string, not the same object
    assert not compare(h, h[:-1] + ("0" if h[-1] != "0" else "1"))
    assert not compare(h, h[:-1])
    assert not compare(h, "")
