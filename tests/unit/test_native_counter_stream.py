"""A pack's blobs share one AES-CTR key stream (``packer.CounterStream``): each blob's IV is the counter block
its encryption starts at. What must hold: every blob still decrypts on its own from its stored IV (as restic
reads it), no counter block serves two blobs, the counter carries across all 128 bits as restic's Go CTR
does, and a forked process never continues its parent's stream."""

from __future__ import annotations

import os
import random

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from kubestash.engine.native.crypto import IV_SIZE, Key
from kubestash.engine.native.pack import decode_blob, read_header
from kubestash.engine.native.packer import DATA, TREE, CounterStream, PackWriter


def _blocks(length: int) -> int:
    return -(-length // IV_SIZE)


def test_blobs_decrypt_alone_and_use_disjoint_counter_blocks() -> None:
    key = Key.random()
    writer = PackWriter(key, 2)
    rng = random.Random(3)
    sizes = [0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 70_000] + [rng.randrange(1, 50_000) for _ in range(40)]
    blobs = [os.urandom(size) for size in sizes]  # random: stored uncompressed, so lengths are the sizes above
    for i, blob in enumerate(blobs):
        writer.add(TREE if i % 5 == 0 else DATA, blob)
    pack = writer.finish()
    header = read_header(key, pack.data)
    used: set[int] = set()
    for entry, plaintext in zip(header, blobs, strict=True):
        stored = pack.data[entry.offset : entry.offset + entry.length]
        assert decode_blob(key, entry, stored) == plaintext
        first = int.from_bytes(stored[:IV_SIZE], "big")
        ciphertext_length = entry.length - 2 * IV_SIZE
        blocks = {(first + n) % (1 << 128) for n in range(_blocks(ciphertext_length))}
        assert not blocks & used, "a counter block encrypted two blobs"
        used |= blocks


def test_the_counter_carries_across_all_128_bits() -> None:
    """A stream that starts two blocks below 2^128 wraps to zero: the next blob's stored IV must be the block
    the stream really went on with, as a fresh CTR decryptor from that IV (OpenSSL's, like Go's) sees it."""
    aes_key = os.urandom(32)
    stream = CounterStream(algorithms.AES(aes_key), iv=((1 << 128) - 2).to_bytes(IV_SIZE, "big"))
    first, second = os.urandom(5 * IV_SIZE - 3), os.urandom(40)
    out = [bytearray(len(first) + IV_SIZE), bytearray(len(second) + IV_SIZE)]
    iv1 = stream.encrypt_into(first, memoryview(out[0]))
    iv2 = stream.encrypt_into(second, memoryview(out[1]))
    assert int.from_bytes(iv2, "big") == 3, "5 blocks from 2^128 - 2 end at 2, the next blob starts at 3"
    for iv, plaintext, ciphertext in ((iv1, first, out[0]), (iv2, second, out[1])):
        decryptor = Cipher(algorithms.AES(aes_key), modes.CTR(iv)).decryptor()
        assert decryptor.update(bytes(ciphertext[: len(plaintext)])) == plaintext


def _second_iv(key: Key, writer: PackWriter) -> bytes:
    writer.add(DATA, os.urandom(100))
    pack = writer.finish()
    second = read_header(key, pack.data)[1]
    return bytes(pack.data[second.offset : second.offset + IV_SIZE])


def test_a_forked_child_does_not_continue_its_parents_stream() -> None:
    key = Key.random()
    writer = PackWriter(key, 2)
    writer.add(DATA, os.urandom(100))  # the stream now exists, inherited by the child below
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its second blob's IV to the parent
        try:
            os.write(write_end, _second_iv(key, writer))
        finally:
            os._exit(0)
    os.close(write_end)
    child_iv = os.read(read_end, IV_SIZE)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child_iv) == IV_SIZE
    assert child_iv != _second_iv(key, writer), "parent and child went on with the same key stream"
