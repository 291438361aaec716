"""restic pack files: blobs one after another, then the encrypted header, then its length.

A pack is ``blob_1 || ... || blob_n || encrypted header || uint32le(len(encrypted header))``. Each blob is
encrypted on its own (IV, AES-256-CTR, Poly1305-AES tag) and, in repository version 2, may hold a zstd frame
(no version byte, unlike unpacked files). The plaintext header lists the blobs in order, one entry each:

* type 0 (data) / 1 (tree): ``type (1) || uint32le length || id (32)`` -- 37 bytes;
* type 2 (compressed data) / 3 (compressed tree): ``type (1) || uint32le length || uint32le uncompressed
  length || id (32)`` -- 41 bytes.

``length`` is the encrypted size in the pack; offsets follow from the order. A blob's id is the SHA-256 of
its *uncompressed* plaintext, which is what makes every read verifiable: :func:`decode_blob` checks it, so a
damaged pack never yields wrong bytes, only :class:`IntegrityError`.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Iterable
from typing import Literal, NamedTuple

import zstandard
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from kubestash.engine.native.crypto import IV_SIZE, MAC_SIZE, OVERHEAD, CryptoError, Key

BlobType = Literal["data", "tree"]

HEADER_LENGTH_SIZE = 4
PLAIN_ENTRY = 37
COMPRESSED_ENTRY = 41
_TYPES: dict[int, tuple[BlobType, bool]] = {
    0: ("data", False),
    1: ("tree", False),
    2: ("data", True),
    3: ("tree", True),
}


class IntegrityError(Exception):
    """Repository data does not authenticate or does not hash to its id: the repository is damaged."""


class PackedBlob(NamedTuple):
    """One blob as a pack header or an index describes it. ``uncompressed_length`` is None for plain blobs.

    A named tuple rather than a dataclass: the index holds one per blob (80 bytes instead of 168, and four
    times faster to build while an index loads)."""

    id: str
    type: BlobType
    offset: int
    length: int
    uncompressed_length: int | None = None

    @property
    def plaintext_length(self) -> int:
        """The blob's size once decrypted and decompressed: what it contributes to a file."""
        return self.uncompressed_length if self.uncompressed_length is not None else self.length - OVERHEAD


def header_length(tail: bytes) -> int:
    """The encrypted header's size from a pack's last 4 bytes."""
    if len(tail) < HEADER_LENGTH_SIZE:
        raise IntegrityError("pack too short for its header length")
    (length,) = struct.unpack("<I", tail[-HEADER_LENGTH_SIZE:])
    return int(length)


def parse_header(key: Key, encrypted_header: bytes, pack_id: str = "?") -> list[PackedBlob]:
    """The blobs a pack holds, from its encrypted header."""
    try:
        plain = key.decrypt_bytes(encrypted_header)
    except CryptoError as e:
        raise IntegrityError(f"pack {pack_id}: header: {e}") from None
    blobs: list[PackedBlob] = []
    pos = offset = 0
    while pos < len(plain):
        kind = _TYPES.get(plain[pos])
        if kind is None:
            raise IntegrityError(f"pack {pack_id}: header: unknown blob type {plain[pos]}")
        blob_type, compressed = kind
        size = COMPRESSED_ENTRY if compressed else PLAIN_ENTRY
        if pos + size > len(plain):
            raise IntegrityError(f"pack {pack_id}: header: truncated entry at byte {pos}")
        (length,) = struct.unpack_from("<I", plain, pos + 1)
        uncompressed: int | None = None
        if compressed:
            (uncompressed,) = struct.unpack_from("<I", plain, pos + 5)
        blob_id = plain[pos + size - 32 : pos + size].hex()
        blobs.append(PackedBlob(blob_id, blob_type, offset, length, uncompressed))
        offset += length
        pos += size
    return blobs


def read_runs(blobs: Iterable[PackedBlob], max_bytes: int, max_gap: int = 0) -> list[list[PackedBlob]]:
    """``blobs`` in pack order, grouped into runs to read with one ranged read each: a run spans at most
    ``max_bytes`` (unless one blob is larger) and skips at most ``max_gap`` bytes between two of its blobs."""
    runs: list[list[PackedBlob]] = []
    for blob in sorted(blobs, key=lambda b: b.offset):
        if runs:
            first, last = runs[-1][0], runs[-1][-1]
            end = blob.offset + blob.length
            if blob.offset - (last.offset + last.length) <= max_gap and end - first.offset <= max_bytes:
                runs[-1].append(blob)
                continue
        runs.append([blob])
    return runs


def read_header(key: Key, pack: bytes, pack_id: str = "?") -> list[PackedBlob]:
    """The blobs of a whole pack held in memory (checks that the header fits after the blobs it lists)."""
    start = header_start(pack, len(pack), pack_id)
    return header_blobs(key, pack[start : len(pack) - HEADER_LENGTH_SIZE], start, pack_id)


def header_start(tail: bytes, size: int, pack_id: str = "?") -> int:
    """Where the encrypted header begins in a pack of ``size`` bytes ending with ``tail`` (its last 4 bytes at
    least): a pack can be checked from ranged reads of its end, not only whole."""
    if size < HEADER_LENGTH_SIZE:
        raise IntegrityError(f"pack {pack_id}: {size} bytes, too short for a header")
    length = header_length(tail)
    start = size - HEADER_LENGTH_SIZE - length
    if start < 0:
        raise IntegrityError(f"pack {pack_id}: header length {length} exceeds the pack size {size}")
    return start


def header_blobs(key: Key, encrypted_header: bytes, start: int, pack_id: str = "?") -> list[PackedBlob]:
    """The blobs of the header found at ``start`` (:func:`header_start`), which must end where it begins."""
    blobs = parse_header(key, encrypted_header, pack_id)
    if blobs and blobs[-1].offset + blobs[-1].length != start:
        raise IntegrityError(f"pack {pack_id}: blobs end at {blobs[-1].offset + blobs[-1].length}, header at {start}")
    return blobs


_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompressor: making one per blob (its context zeroed each time) cost ~3 % of a restore."""
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found


def decode_blob(key: Key, blob: PackedBlob, stored: bytes | memoryview, pack_id: str = "?") -> bytes:
    """The verified plaintext of ``blob`` from its ``blob.length`` encrypted bytes. ``stored`` may be a view
    into a larger read (a pack, a span of it): the MAC and the decryption read it in place, no copy first."""
    if len(stored) != blob.length:
        raise IntegrityError(f"{_where(pack_id, blob)}: read {len(stored)} bytes, expected {blob.length}")
    if len(stored) < OVERHEAD:
        raise IntegrityError(f"{_where(pack_id, blob)}: ciphertext too short")
    with memoryview(stored) as view:
        iv = bytes(view[:IV_SIZE])
        ciphertext = view[IV_SIZE:-MAC_SIZE]
        try:
            Poly1305.verify_tag(key.mac_r + key.mac_pad(iv), ciphertext, bytes(view[-MAC_SIZE:]))
        except InvalidSignature:
            raise IntegrityError(f"{_where(pack_id, blob)}: ciphertext verification failed") from None
        plain = Cipher(algorithms.AES(key.encrypt), modes.CTR(iv)).decryptor().update(ciphertext)
        ciphertext.release()
    if blob.uncompressed_length is not None:
        try:
            plain = _decompressor().decompress(plain, max_output_size=blob.uncompressed_length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{_where(pack_id, blob)}: cannot decompress: {e}") from None
        if len(plain) != blob.uncompressed_length:
            expected = blob.uncompressed_length
            raise IntegrityError(f"{_where(pack_id, blob)}: decompressed to {len(plain)} bytes, expected {expected}")
    if hashlib.sha256(plain).hexdigest() != blob.id:
        raise IntegrityError(f"{_where(pack_id, blob)}: content does not hash to its id")
    return plain


def _where(pack_id: str, blob: PackedBlob) -> str:
    """How an error names a blob (built only on error: a restore decodes tens of thousands of blobs)."""
    return f"pack {pack_id}: {blob.type} blob {blob.id}"
