"""A pack built with ``spill`` (the worker processes' way: written to its file as it grows) is the same pack:
its pieces and tail together read back blob for blob, under the id the writer reported."""

from __future__ import annotations

import hashlib
import os
import random

from kubestash.engine.native.crypto import Key
from kubestash.engine.native.pack import decode_blob, read_header
from kubestash.engine.native.packer import DATA, SPILL_ALIGN, SPILL_AT, PackWriter


def test_spilled_pieces_and_tail_are_the_whole_pack() -> None:
    key = Key.random()
    pieces: list[bytes] = []
    writer = PackWriter(key, 2, spill=lambda piece: pieces.append(bytes(piece)))
    rng = random.Random(7)
    for pack_number in range(2):  # the writer starts over cleanly after finish
        pieces.clear()
        blobs = [os.urandom(rng.choice([10, 5000, 700_000, 3 * SPILL_AT + 1])) for _ in range(12)]
        blobs.append(b"compressible " * 50_000)
        for blob in blobs:
            writer.add(DATA, blob)
        pack = writer.finish(as_bytes=False)
        whole = b"".join(pieces) + bytes(pack.data)
        assert pieces, "a pack this size spilled while it grew"
        assert all(len(p) % SPILL_ALIGN == 0 and 0 < len(p) <= SPILL_AT for p in pieces)
        assert len(pack.data) < SPILL_AT + 64 * 1024, "only the tail stayed in memory"
        assert hashlib.sha256(whole).hexdigest() == pack.id, f"pack {pack_number}: the id is the whole pack's"
        header = read_header(key, whole)
        assert header == list(pack.blobs)
        for entry, plaintext in zip(header, blobs, strict=True):
            stored = whole[entry.offset : entry.offset + entry.length]
            assert decode_blob(key, entry, stored) == plaintext
        writer.recycle(pack.data)
