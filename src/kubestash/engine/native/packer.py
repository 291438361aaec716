"""Pack files, index files and snapshot documents, written the way restic's design document specifies.

A pack is the blobs, each encrypted on its own (so any one can be read with a single ranged request),
followed by the encrypted header that lists them and the header's length as a little-endian uint32. A
header entry is ``type (1) || length (4) || id (32)`` for an uncompressed blob (type 0 data, 1 tree) and
``type (1) || length (4) || uncompressed length (4) || id (32)`` for a zstd-compressed one (type 2 data,
3 tree); ``length`` is the blob's size *as stored* (IV + ciphertext + MAC). A blob's id is the SHA-256 of
its plaintext, a pack's id the SHA-256 of its bytes. Repository version 1 has no compression; version 2
compresses a blob only when that makes it smaller, and does not try on a large blob whose first 16 KiB do
not compress (restic reads either).

The index file (``index/<storage id>``) tells a reader which pack holds which blob without opening packs;
the snapshot document names the root tree. Both are JSON in restic 0.14's key order; their bytes need not
match restic's (their ids are random anyway), only their meaning.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import cast

import zstandard
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from kubestash.engine.native.crypto import IV_SIZE, MAC_SIZE, Key
from kubestash.engine.native.pack import BlobType, PackedBlob
from kubestash.engine.native.tree import GoTime, go_json_string

DATA: BlobType = "data"
TREE: BlobType = "tree"
_TYPE_CODES = {DATA: 0, TREE: 1}
_COMPRESSED = 2  # added to the type code of a compressed blob
_PLAIN_ENTRY = struct.Struct("<BI32s")
_COMPRESSED_ENTRY = struct.Struct("<BII32s")
SAMPLE = 16 * 1024
"""Bytes of a large blob compressed first, to decide whether compressing all of it is worth it."""
SPILL_AT = 1024 * 1024
"""With a ``spill`` (see :class:`PackWriter`), bytes gathered before they are handed over."""
SPILL_ALIGN = 4096
"""Spilled pieces are a multiple of this (a page: what ``O_DIRECT`` writes need, see ``direct_io``)."""


@dataclass(frozen=True)
class Pack:
    id: str
    data: bytes
    """The pack's bytes (from ``PackWriter.finish(as_bytes=False)`` a ``bytearray``: bytes-like, not copied)."""
    blobs: tuple[PackedBlob, ...]

    @property
    def path(self) -> str:
        """The pack's file name relative to the repository root."""
        return f"data/{self.id[:2]}/{self.id}"

    def index_text(self) -> str:
        """This pack's entry of an index file (JSON), remembered on the pack (outside the fields, like
        ``GoTime.to_json``): a backup builds it when the pack is reported, while its workers still run, so that
        the index file at the end is a join (building 23k blobs' entries there cost ~60 ms of a 3 s backup)."""
        cached: str | None = self.__dict__.get("_index_text")
        if cached is None:
            cached = _pack_index_json(self)
            object.__setattr__(self, "_index_text", cached)
        return cached


class CounterStream:
    """One AES-256-CTR key stream for many blobs: each blob's IV is the counter block its encryption starts at.

    restic draws a random IV per blob; what CTR needs is only that no counter block is ever used twice under
    the key. A random starting block per stream, with each blob starting at the next unused block, gives that
    just as well: two streams would have to start within a few billion blocks of each other out of 2^128
    (the same odds as two random IVs' ranges meeting), and within a stream the blocks never repeat. Readers
    cannot tell (the IV is stored with each blob, as always). It saves building a cipher context per blob:
    ~8 µs, a tenth of the CPU a small file costs a backup. A stream is used by one thread, and only in the
    process that made it (:attr:`pid`): a forked child going on from its parent's counter would encrypt with
    the parent's key stream."""

    def __init__(self, aes: algorithms.AES, iv: bytes | None = None) -> None:
        iv = os.urandom(IV_SIZE) if iv is None else iv
        self.pid = os.getpid()
        self._counter = int.from_bytes(iv, "big")
        self._encryptor = Cipher(aes, modes.CTR(iv)).encryptor()
        self._pad = bytearray(2 * IV_SIZE)

    def encrypt_into(self, plaintext: bytes | memoryview, out: memoryview) -> bytes:
        """Encrypt ``plaintext`` into ``out`` (at least 15 bytes longer, as ``update_into`` wants); its IV. The
        stream then skips to the next block boundary, where the next blob's IV points."""
        iv = self._counter.to_bytes(IV_SIZE, "big")
        length = self._encryptor.update_into(plaintext, out)
        blocks, partial = divmod(length, IV_SIZE)
        if partial:
            self._encryptor.update_into(bytes(IV_SIZE - partial), self._pad)
            blocks += 1
        # OpenSSL's CTR, like Go's that restic decrypts with, carries across all 128 bits of the block.
        self._counter = (self._counter + blocks) % (1 << 128)
        return iv


def blob_id(plaintext: bytes) -> str:
    return hashlib.sha256(plaintext).hexdigest()


class PackWriter:
    """Collects encrypted blobs until :meth:`finish` turns them into one pack.

    The pack is built in one growing buffer: a blob is compressed and encrypted straight into it
    (AES-CTR, then the Poly1305-AES MAC over the ciphertext where it lies), and :meth:`finish` appends the
    encrypted header and (``as_bytes=False``) hands that very buffer over as :attr:`Pack.data`, not copied;
    the writer starts a new one. Memory per writer is thus one pack, not the blobs plus their join.
    """

    def __init__(
        self,
        key: Key,
        version: int,
        *,
        compression_level: int = 3,
        capacity: int = 0,
        spill: Callable[[memoryview], None] | None = None,
    ) -> None:
        """``spill``, if given, receives the pack's bytes as it grows, once :data:`SPILL_AT` have gathered, in
        pieces of at most that size and a multiple of :data:`SPILL_ALIGN`, so only about that much (plus a
        blob) stays in memory; :meth:`finish` then returns the rest (see there)."""
        if version not in (1, 2):
            raise ValueError(f"unsupported repository version {version}")
        self._spill = spill
        self._base = 0
        """Offset in the pack of the buffer's first byte (bytes already spilled)."""
        self._hash = hashlib.sha256()
        self._key = key
        self._version = version
        self._compressor = zstandard.ZstdCompressor(level=compression_level) if version >= 2 else None
        self._capacity = capacity
        self._buffer = bytearray()
        self._size = 0
        self._blobs: list[PackedBlob] = []
        self._aes = algorithms.AES(key.encrypt)
        self._mac_ecb = Cipher(algorithms.AES(key.mac_k), modes.ECB()).encryptor()
        """AES-128 of each blob's nonce under the MAC key (Poly1305-AES's ``s``): ECB keeps no state between
        blocks, so one encryptor serves every blob (a new one per blob cost ~3 µs of 20k small files)."""
        self._stream: CounterStream | None = None

    @property
    def size(self) -> int:
        """Bytes of blobs so far (the pack will be this plus its header)."""
        return self._size

    @property
    def count(self) -> int:
        return len(self._blobs)

    def add(self, blob_type: BlobType, plaintext: bytes | memoryview, id: str | None = None) -> PackedBlob:
        """Encrypt (v2: compress first when that helps) and append a blob; ``id`` defaults to its SHA-256."""
        if blob_type not in _TYPE_CODES:
            raise ValueError(f"unknown blob type {blob_type!r}")
        payload, uncompressed = plaintext, None
        if self._compressor is not None and self._worth_compressing(plaintext):
            packed = self._compressor.compress(plaintext)
            if len(packed) < len(plaintext):
                payload, uncompressed = packed, len(plaintext)
        offset = self._append_encrypted(payload)
        blob = PackedBlob(
            id or hashlib.sha256(plaintext).hexdigest(), blob_type, offset, self._size - offset, uncompressed
        )
        self._blobs.append(blob)
        if self._spill is not None and self._size - self._base >= SPILL_AT:
            self._spill_aligned()
        return blob

    def _spill_aligned(self) -> None:
        assert self._spill is not None
        count = (self._size - self._base) // SPILL_ALIGN * SPILL_ALIGN
        with memoryview(self._buffer) as view:
            for start in range(0, count, SPILL_AT):  # pieces of SPILL_AT at most: the receiver's buffers stay small
                with view[start : min(count, start + SPILL_AT)] as piece:
                    self._hash.update(piece)
                    self._spill(piece)
        rest = self._size - self._base - count  # less than SPILL_ALIGN: moved to the front, the buffer kept
        self._buffer[:rest] = self._buffer[count : count + rest]
        self._base += count

    def _worth_compressing(self, plaintext: bytes | memoryview) -> bool:
        """False for a large blob whose first :data:`SAMPLE` bytes zstd cannot shrink by 2 %: random-looking
        data (already compressed media, archives, encrypted files) is stored plain instead of paying zstd's
        pass over it (a sixth of the CPU a backup of such files costs) for nothing. restic 0.14 compresses
        every blob of a v2 repository; it reads plain ones in any repository."""
        assert self._compressor is not None
        if len(plaintext) < 4 * SAMPLE:
            return True
        return len(self._compressor.compress(plaintext[:SAMPLE])) < 0.98 * SAMPLE

    def _append_encrypted(self, payload: bytes | memoryview) -> int:
        """Append ``IV || AES-256-CTR(payload) || MAC`` (restic's framing, as ``Key.encrypt_bytes``); where.

        The buffer is allocated at ``capacity`` bytes up front (untouched pages cost no memory) and grown
        geometrically past it; ``payload`` is encrypted straight into it (one pass over the bytes, no copy
        first), with the pack's :class:`CounterStream`."""
        offset = self._size
        start = offset - self._base
        end = start + IV_SIZE + len(payload)
        need = end + MAC_SIZE
        buffer = self._buffer
        if need > len(buffer):
            grow = max(need, self._capacity, 2 * len(buffer)) - len(buffer)
            buffer.extend(bytes(grow))
        stream = self._stream
        if stream is None or stream.pid != os.getpid():
            stream = self._stream = CounterStream(self._aes)
        with memoryview(buffer) as view:
            # update_into wants room for a block's slack past the data: the MAC's 16 bytes.
            iv = stream.encrypt_into(payload, view[start + IV_SIZE : need])
            view[start : start + IV_SIZE] = iv
            with view[start + IV_SIZE : end] as ciphertext:
                view[end:need] = Poly1305.generate_tag(self._key.mac_r + self._mac_ecb.update(iv), ciphertext)
        self._size = need + self._base
        return offset

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

    def finish(self, *, as_bytes: bool = True) -> Pack:
        """The pack's bytes and id; the writer starts over empty. ``as_bytes=False`` hands over the buffer
        itself (a ``bytearray``, no copy): for a local store, whose writes take any bytes-like object; some
        object store clients insist on ``bytes``. With ``spill``, :attr:`Pack.data` is only what was not
        spilled yet (the pack's tail, to be written after the spilled pieces); the id is the whole pack's."""
        if not self._blobs:
            raise ValueError("a pack needs at least one blob")
        header_start = self._append_encrypted(self.header())
        data = self._buffer
        del data[self._size - self._base :]  # the unused capacity (shrinking an mmap-backed buffer does not copy)
        data += struct.pack("<I", self._size - header_start)
        self._hash.update(data)
        stored = bytes(data) if as_bytes else cast(bytes, data)
        pack = Pack(self._hash.hexdigest(), stored, tuple(self._blobs))
        # A copy went out: the next pack reuses this buffer (see recycle()).
        self._buffer, self._blobs, self._size = data if as_bytes else bytearray(), [], 0
        self._base, self._hash = 0, hashlib.sha256()
        return pack

    def recycle(self, data: bytes) -> None:
        """Give back a pack's buffer from :meth:`finish` (``as_bytes=False``) once it is written: the next
        pack is built in it. A fresh pack-sized buffer costs a page fault and a zeroed page per 4 KiB (with
        the zero-fill copy, ~5 % of a backup's CPU); a reused one costs nothing. Ignored unless this writer
        is empty and has no buffer of its own yet."""
        if isinstance(data, bytearray) and not self._blobs and not self._buffer:
            self._buffer = data


def index_json(packs: Iterable[Pack], supersedes: Sequence[str] = ()) -> bytes:
    """restic's index file plaintext for these packs (encrypt it with ``files.encode_unpacked``)."""
    head = '{"supersedes":' + json.dumps(list(supersedes), separators=(",", ":")) + "," if supersedes else "{"
    return (head + '"packs":[' + ",".join(pack.index_text() for pack in packs) + "]}").encode()


def _pack_index_json(pack: Pack) -> str:
    """One pack of an index file, in restic 0.14's key order, formatted directly (a third of the time of building
    dicts for ``json.dumps``). The ids this engine computes are hex and go in as they are; ids read from some
    repository's index are not trusted to need no escaping: unless every id of the pack is plain ASCII letters
    and digits, each is written by ``json.dumps``."""
    ids = pack.id + "".join([blob.id for blob in pack.blobs])
    quote = _plain_string if ids.isascii() and ids.isalnum() else json.dumps
    blobs = ",".join(
        [
            f'{{"id":{quote(id)},"type":"{kind}","offset":{offset},"length":{length}}}'
            if uncompressed is None
            else f'{{"id":{quote(id)},"type":"{kind}","offset":{offset},"length":{length},'
            f'"uncompressed_length":{uncompressed}}}'
            for id, kind, offset, length, uncompressed in pack.blobs
        ]
    )
    return f'{{"id":{quote(pack.id)},"blobs":[{blobs}]}}'


def _plain_string(text: str) -> str:
    return f'"{text}"'


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
