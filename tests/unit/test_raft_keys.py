"""The cluster secret's format and the per-cluster frame keys derived from it: AES-GCM for
hcraft2 keys, Fernet for the hcraft1 keys earlier versions generated."""

from __future__ import annotations

import subprocess
import sys
import time

import pysyncobj.encryptor
import pysyncobj.syncobj
import pytest
from cryptography.fernet import InvalidToken

from hacontrol.raft import cipher
from hacontrol.raft.cipher import FrameError
from hacontrol.raft.keys import (
    SecretError,
    generate_secret,
    make_encryptor,
    parse_secret,
)
from hacontrol.raft.safety import install_fence, require_secret


def _token(secret: str, data: bytes = b"frame") -> bytes:
    # What pysyncobj's TcpConnection.send does: seal with a monotonic timestamp.
    return make_encryptor(secret).encrypt_at_time(data, int(time.monotonic()))


def _v1_secret() -> str:
    """A secret as earlier versions generated it (Fernet frames)."""
    return "hcraft1" + generate_secret().removeprefix("hcraft2")


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


@pytest.mark.parametrize("old_kind", ["hcraft2", "hcraft1"])
def test_rotation_window_accepts_both_keys_and_sends_with_the_first(old_kind: str) -> None:
    # From an hcraft1 key, the same rotation moves a cluster from Fernet to AES-GCM.
    old = generate_secret() if old_kind == "hcraft2" else _v1_secret()
    new = generate_secret()
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


def test_new_secrets_seal_with_aes_gcm_and_old_ones_with_fernet() -> None:
    new, old = generate_secret(), _v1_secret()
    frame = _token(new, b"x" * 100)
    assert frame[:1] == b"\x02" and len(frame) == 25 + 100 + 16  # header, data, tag
    assert make_encryptor(new).decrypt(frame) == b"x" * 100
    assert _token(old)[:1] == b"g"  # Fernet's version byte, in base64
    assert make_encryptor(old).decrypt(_token(old)) == b"frame"
    # A cluster on one kind refuses the other's frames with the one error type.
    with pytest.raises(FrameError):
        make_encryptor(old).decrypt(frame)
    with pytest.raises(InvalidToken):
        make_encryptor(new).decrypt(_token(old))


def test_every_frame_is_later_than_the_last_so_replays_are_refused() -> None:
    """pysyncobj refuses a frame whose "timestamp" is below the connection's last one;
    a version 2 frame's is its sender's counter, which grows with every frame."""
    secret = generate_secret()
    enc, receiver = make_encryptor(secret), make_encryptor(secret)
    stamps = [receiver.extract_timestamp(enc.encrypt_at_time(b"f", 5)) for _ in range(100)]
    assert stamps == sorted(set(stamps))  # within one second, too
    v1 = _v1_secret()
    assert make_encryptor(v1).extract_timestamp(make_encryptor(v1).encrypt_at_time(b"f", 777)) \
        == 777


@pytest.mark.parametrize("where", [0, 1, 18, 24, 25, -1])  # mark, sender, counter, data, tag
def test_a_frame_changed_anywhere_is_refused(where: int) -> None:
    secret = generate_secret()
    frame = bytearray(_token(secret))
    frame[where] ^= 0x01
    receiver = make_encryptor(secret)
    with pytest.raises(FrameError):
        receiver.extract_timestamp(bytes(frame))
    with pytest.raises(FrameError):
        receiver.decrypt(bytes(frame))
    assert receiver.decrypt(_token(secret)) == b"frame"  # the receiver is not harmed


@pytest.mark.parametrize("frame", [b"", b"\x02", b"\x02" + bytes(48), b"garbage"])
def test_short_or_foreign_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(InvalidToken):
        make_encryptor(generate_secret()).decrypt(frame)


def test_no_nonce_repeats_under_one_key() -> None:
    """GCM's one rule: within a sender the counter grows, and every replica process (every
    cipher) seals as a sender of its own, under a key of its own."""
    secret = generate_secret()
    a, b = make_encryptor(secret), make_encryptor(secret)
    frames_a = [a.encrypt_at_time(b"same", 1) for _ in range(1000)]
    frame_b = b.encrypt_at_time(b"same", 1)
    senders = {f[1:17] for f in frames_a}
    assert len(senders) == 1 and frame_b[1:17] not in senders
    counters = [int.from_bytes(f[17:25], "big") for f in frames_a]
    assert counters == sorted(set(counters))
    # Same sender, data and time: only the counter differs, and so does every ciphertext.
    assert len({f[25:] for f in frames_a}) == 1000
    receiver = make_encryptor(secret)
    assert all(receiver.decrypt(f) == b"same" for f in [*frames_a[:10], frame_b])


def test_only_senders_that_proved_the_key_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cipher, "MAX_SENDERS", 4)
    secret = generate_secret()
    receiver = make_encryptor(secret)
    (key,) = receiver._v2
    for _ in range(6):  # restarted peers: new senders push the oldest out
        assert receiver.decrypt(_token(secret)) == b"frame"
    assert len(key._senders) == 4
    kept = dict(key._senders)
    forged = bytearray(_token(secret))
    for n in range(20):  # another sender id on a captured frame: refused, and not kept
        forged[1:17] = n.to_bytes(16, "big")
        with pytest.raises(FrameError):
            receiver.decrypt(bytes(forged))
    assert key._senders == kept
