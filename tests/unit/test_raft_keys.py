"""The cluster secret's format and the per-cluster Fernet keys derived from it."""

from __future__ import annotations

import subprocess
import sys
import time

import pysyncobj.encryptor
import pysyncobj.syncobj
import pytest
from cryptography.fernet import InvalidToken

from hacontrol.raft.keys import (
    SecretError,
    generate_secret,
    make_encryptor,
    parse_secret,
)
from hacontrol.raft.safety import install_fence, require_secret


def _token(secret: str, data: bytes = b"frame") -> bytes:
    # What pysyncobj's TcpConnection.send does: Fernet with a monotonic timestamp.
    return make_encryptor(secret).encrypt_at_time(data, int(time.monotonic()))


def test_generated_secret_is_32_random_bytes_with_a_16_byte_salt() -> None:
    a, b = generate_secret(), generate_secret()
    (ka,), (kb,) = parse_secret(a), parse_secret(b)
    assert len(ka.key) == 32 and len(ka.salt) == 16
    assert ka.key != kb.key and ka.salt != kb.salt


@pytest.mark.parametrize("bad", [
    None, "", "   ",
    "test-cluster-secret-0123456789abcdef",  # a password, as earlier versions took
    "ab" * 32,  # 32 bytes of hex without the salt
    "hcraft1." + "11" * 16 + "." + "ab" * 31,  # key too short
    "hcraft1." + "11" * 16 + "." + "00" * 32,  # not random
    "hcraft1." + "11" * 16 + "." + "0123456789abcdef" * 4,  # placeholder pattern
])
def test_weak_or_malformed_secrets_are_refused_without_echoing_them(bad: str | None) -> None:
    with pytest.raises(SecretError) as info:
        require_secret(bad)
    if bad and bad.strip():
        assert bad not in str(info.value)


def test_same_key_with_another_salt_cannot_talk() -> None:
    mine = generate_secret()
    prefix, salt, key = mine.split(".")
    other = f"{prefix}.{generate_secret().split('.')[1]}.{key}"
    assert make_encryptor(mine).decrypt(_token(mine)) == b"frame"
    with pytest.raises(InvalidToken):
        make_encryptor(other).decrypt(_token(mine))
    with pytest.raises(InvalidToken):
        make_encryptor(mine).extract_timestamp(_token(other))


def test_rotation_window_accepts_both_keys_and_sends_with_the_first() -> None:
    old, new = generate_secret(), generate_secret()
    adding = f"{old}\n{new}"  # step 1: still sends with old, accepts new
    switched = f"{new}\n{old}"  # step 2: sends with new, accepts old
    for window in (adding, switched):
        for sender in (old, new, adding, switched):
            assert make_encryptor(window).decrypt(_token(sender)) == b"frame"
    # Step 1 replicas still talk to replicas not yet restarted...
    assert make_encryptor(old).decrypt(_token(adding)) == b"frame"
    # ...and step 2 output is readable only by replicas that know the new key.
    with pytest.raises(InvalidToken):
        make_encryptor(old).decrypt(_token(switched))
    assert make_encryptor(new).decrypt(_token(switched)) == b"frame"


def test_install_fence_replaces_pysyncobj_fixed_salt_derivation() -> None:
    install_fence()
    assert pysyncobj.syncobj.getEncryptor is make_encryptor
    assert pysyncobj.encryptor.getEncryptor is make_encryptor


def test_gensecret_prints_a_usable_secret() -> None:
    out = subprocess.run([sys.executable, "-m", "hacontrol.raft.gensecret"], check=True,
                         capture_output=True, text=True)
    assert require_secret(out.stdout.strip()) == out.stdout.strip()
    assert not out.stderr
