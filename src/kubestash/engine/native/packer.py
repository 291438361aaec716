"""Pack files, index files and snapshot documents, written the way restic's design document specifies.

A pack is the blobs, each encrypted on its own (so any one can be read with a single ranged request),
followed by the encrypted header that lists them and the header's length as a little-endian uint32. A
header entry is ``type (1) || length (4) || id (32)`` for an uncompressed blob (type 0 data, 1 tree) and
``type (1) || length (4) || uncompressed length (4) || id (32)`` for a zstd-compressed one (type 2 data,
3 tree); ``length`` is the blob's size *as stored* (IV + ciphertext + MAC). A blob's id is the SHA-256 of
its plaintext, a pack's id the SHA-256 of its bytes. Repository version 1 has no compression; version 2
compresses a blob only when that makes it smaller (restic reads either).

The index file (``index/<storage id>``) tells a reader which pack holds which blob without opening packs;
the snapshot document names the root tree. Both are JSON in restic 0.14's key order; their bytes need not
match restic's (their ids are random anyway), only their meaning.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from kubestash.engine.native.crypto import Key
from kubestash.engine.native.pack import BlobType, PackedBlob
from kubestash.engine.native.tree import GoTime, go_json_string

DATA: BlobType = "data"
TREE: BlobType = "tree"
_TYPE_CODES = {DATA: 0, TREE: 1}
_COMPRESSED = 2  # added to the type code of a compressed blob
_PLAIN_ENTRY = struct.Struct("<BI32s")
_COMPRESSED_ENTRY = struct.Struct("<BII32s")


@dataclass(frozen=True)
class Pack:
    id: str
    data: bytes
    blobs: tuple[PackedBlob, ...]

    @property
    def path(self) -> str:
        """The pack's file name relative to the repository root."""
        return f"data/{self.id[:2]}/{self.id}"


def blob_id(plaintext: bytes) -> str:
    return hashlib.sha256(plaintext).hexdigest()


class PackWriter:
    """Collects encrypted blobs in memory until :meth:`finish` turns them into one pack."""

    def __init__(self, key: Key, version: int, *, compression_level: int = 3) -> None:
        if version not in (1, 2):
            raise ValueError(f"unsupported repository version {version}")
        self._key = key
        self._version = version
        self._compressor = zstandard.ZstdCompressor(level=compression_level) if version >= 2 else None
        self._chunks: list[bytes] = []
        self._blobs: list[PackedBlob] = []
        self._size = 0

    @property
    def size(self) -> int:
        """Bytes of blobs so far (the pack will be this plus its header)."""
        return self._size

    @property
    def count(self) -> int:
        return len(self._blobs)

    def add(self, blob_type: BlobType, plaintext: bytes, id: str | None = None) -> PackedBlob:
        """Encrypt (v2: compress first when that helps) and append a blob; ``id`` defaults to its SHA-256."""
        if blob_type not in _TYPE_CODES:
            raise ValueError(f"unknown blob type {blob_type!r}")
        payload, uncompressed = plaintext, None
        if self._compressor is not None:
            packed = self._compressor.compress(plaintext)
            if len(packed) < len(plaintext):
                payload, uncompressed = packed, len(plaintext)
        stored = self._key.encrypt_bytes(payload)
        blob = PackedBlob(id or blob_id(plaintext), blob_type, self._size, len(stored), uncompressed)
        self._chunks.append(stored)
        self._blobs.append(blob)
        self._size += len(stored)
        return blob

    def header(self) -> bytes:
        entries = []
        for blob in self._blobs:
            code = _TYPE_CODES[blob.type]
            raw_id = bytes.fromhex(blob.id)
            if blob.uncompressed_length is None:
                entries.append(_PLAIN_ENTRY.pack(code, blob.length, raw_id))
            else:
                entries.append(
                    _COMPRESSED_ENTRY.pack(code + _COMPRESSED, blob.length, blob.uncompressed_length, raw_id)
                )
        return b"".join(entries)

    def finish(self) -> Pack:
        """The pack's bytes and id; the writer starts over empty."""
        if not self._blobs:
            raise ValueError("a pack needs at least one blob")
        encrypted_header = self._key.encrypt_bytes(self.header())
        data = b"".join([*self._chunks, encrypted_header, struct.pack("<I", len(encrypted_header))])
        pack = Pack(hashlib.sha256(data).hexdigest(), data, tuple(self._blobs))
        self._chunks, self._blobs, self._size = [], [], 0
        return pack


def index_json(packs: Iterable[Pack], supersedes: Sequence[str] = ()) -> bytes:
    """restic's index file plaintext for these packs (encrypt it with ``files.encode_unpacked``)."""
    doc: dict[str, Any] = {}
    if supersedes:
        doc["supersedes"] = list(supersedes)
    doc["packs"] = [
        {
            "id": pack.id,
            "blobs": [
                {
                    "id": blob.id,
                    "type": blob.type,
                    "offset": blob.offset,
                    "length": blob.length,
                    **({} if blob.uncompressed_length is None else {"uncompressed_length": blob.uncompressed_length}),
                }
                for blob in pack.blobs
            ],
        }
        for pack in packs
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


def snapshot_json(
    *,
    time: GoTime,
    tree: str,
    paths: Sequence[str],
    hostname: str = "",
    username: str = "",
    uid: int = 0,
    gid: int = 0,
    parent: str | None = None,
    excludes: Sequence[str] = (),
    tags: Sequence[str] = (),
    original: str | None = None,
) -> bytes:
    """A snapshot document with restic 0.14's fields in its order (``omitempty`` honoured)."""

    def strings(items: Iterable[str]) -> str:
        return "[" + ",".join(go_json_string(item) for item in items) + "]"

    parts = [f'"time":"{time.to_json()}"']
    if parent is not None:
        parts.append(f'"parent":"{parent}"')
    parts += [f'"tree":"{tree}"', f'"paths":{strings(paths)}']
    if hostname:
        parts.append(f'"hostname":{go_json_string(hostname)}')
    if username:
        parts.append(f'"username":{go_json_string(username)}')
    if uid:
        parts.append(f'"uid":{uid}')
    if gid:
        parts.append(f'"gid":{gid}')
    if excludes:
        parts.append(f'"excludes":{strings(excludes)}')
    if tags:
        parts.append(f'"tags":{strings(tags)}')
    if original is not None:
        parts.append(f'"original":"{original}"')
    return ("{" + ",".join(parts) + "}").encode()
