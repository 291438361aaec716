"""Creating a restic repository natively: ``config`` and a first key file, as ``restic init`` writes them.

A repository is usable by restic once it has an encrypted ``config`` (version, random id, chunker
polynomial) and a key file that a password opens (scrypt parameters, salt and the master key encrypted by
the derived key). Both are written here with restic 0.14's field names and order, so ``restic snapshots``
and ``restic check`` accept the result, and :meth:`NativeRepository.open` opens it like any other.

scrypt: restic calibrates its parameters to ~0.5 s on the machine running ``init`` (0.14 wrote N=32768,
r=8, p=7 here). We use N=32768, r=8, p=4 (~0.35 s on this 2-core machine; 32 MiB of memory), which restic
reads because it honours whatever the key file records. Tests pass cheap parameters.

The chunker polynomial only matters to restic's own Rabin chunker (the native engine cuts with FastCDC);
it is generated as restic does: a random irreducible polynomial of degree 53 over GF(2).
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

from kubestash.engine.native.crypto import Key, derive_key
from kubestash.engine.native.files import encode_unpacked, storage_id
from kubestash.engine.native.repository import NativeRepository, RepositoryConfig, RepositoryError, new_index
from kubestash.engine.native.store import LocalStore, Store, writable
from kubestash.engine.native.tree import GoTime


@dataclass(frozen=True)
class KdfParams:
    n: int = 32768
    r: int = 8
    p: int = 4


DEFAULT_KDF = KdfParams()
SALT_SIZE = 64
POLYNOMIAL_DEGREE = 53


def _gf2_mod(a: int, m: int) -> int:
    dm = m.bit_length()
    while a.bit_length() >= dm:
        a ^= m << (a.bit_length() - dm)
    return a


def _gf2_mulmod(a: int, b: int, m: int) -> int:
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a.bit_length() >= m.bit_length():
            a ^= m
    return _gf2_mod(result, m)


def _gf2_gcd(a: int, b: int) -> int:
    while b:
        a, b = b, _gf2_mod(a, b)
    return a


def irreducible(poly: int) -> bool:
    """Ben-Or's test (what restic's chunker uses): no factor of degree ``1..deg/2``."""
    degree = poly.bit_length() - 1
    x_power = 2  # the polynomial x
    for _ in range(degree // 2):
        x_power = _gf2_mulmod(x_power, x_power, poly)  # x^(2^i) mod poly
        if _gf2_gcd(poly, x_power ^ 2) != 1:
            return False
    return True


def random_polynomial() -> int:
    """A random irreducible polynomial of degree 53, as restic's ``chunker.RandomPolynomial``."""
    while True:
        poly = int.from_bytes(os.urandom(8), "little")
        poly &= (1 << (POLYNOMIAL_DEGREE + 1)) - 1
        poly |= (1 << POLYNOMIAL_DEGREE) | 1
        if irreducible(poly):
            return poly


def key_file(
    master: Key,
    password: str,
    kdf: KdfParams = DEFAULT_KDF,
    *,
    username: str | None = None,
    hostname: str | None = None,
) -> bytes:
    """A ``keys/<id>`` file opening ``master`` with ``password`` (restic 0.14's JSON field order); the user
    and host it records default to this process's, as ``restic key add`` without ``--user``/``--host``."""
    salt = os.urandom(SALT_SIZE)
    user_key = derive_key(password, salt, kdf.n, kdf.r, kdf.p)
    data = user_key.encrypt_bytes(json.dumps(master.to_json(), separators=(",", ":")).encode())
    if username is None:
        try:
            username = getpass.getuser()
        except (KeyError, OSError):
            username = ""
    doc = {
        "created": GoTime.local(time.time_ns()).to_json(),
        "username": username,
        "hostname": socket.gethostname() if hostname is None else hostname,
        "kdf": "scrypt",
        "N": kdf.n,
        "r": kdf.r,
        "p": kdf.p,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(data).decode(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def init_repository(
    store: Store, password: str, *, version: int = 2, kdf: KdfParams = DEFAULT_KDF
) -> NativeRepository:
    """Create a repository in ``store`` (which must not hold one) and return it opened."""
    if version not in (1, 2):
        raise RepositoryError(f"unsupported repository version {version}")
    if await store.list("config"):
        raise RepositoryError(f"{store.description}: a repository already exists here")
    if isinstance(store, LocalStore):  # restic's local layout, including the 256 data shards
        for sub in ("keys", "index", "snapshots", "locks", *(f"data/{i:02x}" for i in range(256))):
            (store.root / sub).mkdir(parents=True, exist_ok=True)
    out = writable(store)
    master = Key.random()
    config = RepositoryConfig(version, os.urandom(32).hex(), f"{random_polynomial():x}")
    raw_key = key_file(master, password, kdf)
    key_id = storage_id(raw_key)
    await out.put(f"keys/{key_id}", raw_key)
    doc = {"version": config.version, "id": config.id, "chunker_polynomial": config.chunker_polynomial}
    # restic reads ``config`` before it knows the version, so config is never compressed (version-1 framing).
    await out.put("config", encode_unpacked(master, json.dumps(doc, separators=(",", ":")).encode(), 1))
    return NativeRepository(store, master, config, new_index(config.id, master, 0), key_id=key_id)
