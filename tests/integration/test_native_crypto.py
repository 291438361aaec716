"""restic's authenticated encryption: round trips, tamper detection, and restic's own files opened."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubestash.engine.native import crypto
from kubestash.engine.native.crypto import OVERHEAD, CryptoError, Key, open_key_file
from kubestash.engine.native.files import decode_unpacked, encode_unpacked, load_json, storage_id

KEY = Key.random()


@given(st.binary(max_size=4096))
def test_encrypt_decrypt_round_trip(plaintext: bytes) -> None:
    sealed = KEY.encrypt_bytes(plaintext)
    assert len(sealed) == len(plaintext) + OVERHEAD
    assert KEY.decrypt_bytes(sealed) == plaintext


@given(st.binary(min_size=1, max_size=512), st.data())
def test_any_flipped_bit_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    sealed = bytearray(KEY.encrypt_bytes(plaintext))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(CryptoError):
        KEY.decrypt_bytes(bytes(sealed))


def test_another_key_cannot_open() -> None:
    with pytest.raises(CryptoError):
        Key.random().decrypt_bytes(KEY.encrypt_bytes(b"secret"))


@pytest.mark.parametrize("version", [1, 2])
@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c)))
def test_unpacked_files_round_trip(version: int, value: object) -> None:
    raw = json.dumps({"value": value}).encode()
    assert decode_unpacked(KEY, encode_unpacked(KEY, raw, version)) == raw


def test_restic_key_config_and_index_open(tmp_path: Path) -> None:
    """A repository made by the stock restic: its key opens with the password, its files decode and are
    named by the SHA-256 of their bytes."""
    repo, env = tmp_path / "repo", {"RESTIC_PASSWORD": "pw-native-1", "PATH": "/usr/bin:/bin"}
    subprocess.run(["restic", "init", "-q", "-r", str(repo)], env=env, check=True)
    (tmp_path / "f.txt").write_text("hello\n")
    subprocess.run(["restic", "backup", "-q", "-r", str(repo), str(tmp_path / "f.txt")], env=env, check=True)
    (key_file,) = (repo / "keys").iterdir()
    key = open_key_file(json.loads(key_file.read_bytes()), "pw-native-1")
    config = json.loads(key.decrypt_bytes((repo / "config").read_bytes()))
    assert config["version"] == 2 and len(config["id"]) == 64
    for kind in ("index", "snapshots"):
        (path,) = (repo / kind).iterdir()
        data = path.read_bytes()
        assert storage_id(data) == path.name
        assert isinstance(load_json(key, data), dict)
    with pytest.raises(CryptoError):
        open_key_file(json.loads(key_file.read_bytes()), "not-the-password")


def test_scrypt_is_computed_by_libsodium() -> None:
    """PyNaCl is a dependency: without it every command would derive its key twice as slowly (OpenSSL)."""
    assert crypto._sodium() is not None


def test_scrypt_matches_rfc_7914_and_openssl() -> None:
    # RFC 7914, section 12: scrypt(P="password", S="NaCl", N=1024, r=8, p=16), first 64 bytes
    assert crypto.scrypt(b"password", b"NaCl", 1024, 8, 16).hex().startswith("fdbabe1c9d3472007856e7190d01e9fe")
    cases = [(b"", b"", 16, 1, 1), (b"pw", b"s" * 64, 32768, 8, 4), (b"\xff" * 70, b"x", 512, 3, 5)]
    for password, salt, n, r, p in cases:
        expected = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=crypto.SCRYPT_MAX_MEMORY, dklen=64)
        assert crypto.scrypt(password, salt, n, r, p) == expected


@given(st.binary(max_size=40), st.binary(max_size=70), st.integers(1, 9), st.integers(1, 4), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_scrypt_matches_openssl_for_any_parameters(password: bytes, salt: bytes, log_n: int, r: int, p: int) -> None:
    expected = hashlib.scrypt(password, salt=salt, n=2**log_n, r=r, p=p, maxmem=crypto.SCRYPT_MAX_MEMORY, dklen=64)
    assert crypto.scrypt(password, salt, 2**log_n, r, p) == expected


@pytest.mark.parametrize(("n", "r", "p"), [(2**24, 8, 1), (1000, 8, 1), (1, 8, 1)])
def test_scrypt_refuses_what_openssl_refuses(n: int, r: int, p: int) -> None:
    """A hostile key file's huge N is refused, not allocated (16 GiB here); N not a power of two is refused."""
    with pytest.raises(ValueError):
        crypto.scrypt(b"pw", b"salt", n, r, p)
