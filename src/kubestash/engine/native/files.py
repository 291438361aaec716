"""Unpacked repository files (index, snapshots, ...): encrypted JSON, zstd-compressed in repository version 2.

restic's design document: the plaintext of a v2 unpacked file starts with a version byte, ``0x02`` for zstd
compressed JSON; a plaintext that starts with ``{`` or ``[`` is uncompressed JSON (what v1 writes and v2 still
reads). A file's name (storage id) is the SHA-256 of its bytes as stored.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import zstandard

from kubestash.engine.native.crypto import CryptoError, Key

COMPRESSED_JSON = 2


def storage_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_unpacked(key: Key, data: bytes) -> bytes:
    plain = key.decrypt_bytes(data)
    if plain[:1] in (b"{", b"["):
        return plain
    if plain[:1] == bytes([COMPRESSED_JSON]):
        return decompress(plain[1:])
    raise CryptoError(f"unknown unpacked file version {plain[:1].hex() or 'empty'}")


def encode_unpacked(key: Key, plaintext: bytes, version: int) -> bytes:
    if version >= 2:
        plaintext = bytes([COMPRESSED_JSON]) + zstandard.ZstdCompressor(level=3).compress(plaintext)
    return key.encrypt_bytes(plaintext)


def load_json(key: Key, data: bytes) -> Any:
    return json.loads(decode_unpacked(key, data))


def decompress(frame: bytes) -> bytes:
    """A zstd frame, whether or not its header records the content size (restic's encoder may omit it)."""
    return zstandard.ZstdDecompressor().decompressobj().decompress(frame)
