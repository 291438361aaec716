"""Index files are formatted directly for the ids this engine computes; whatever the ids, the document must
be the JSON restic reads: the same keys in restic's order, and ids read from a foreign index escaped."""

from __future__ import annotations

import json
import os
import random

from kubestash.engine.native.pack import PackedBlob
from kubestash.engine.native.packer import Pack, index_json


def _check(text: bytes, packs: list[Pack], supersedes: list[str]) -> None:
    """``text`` parses to ``packs`` (and ``supersedes``), each object's keys in restic 0.14's order, compact."""
    doc = json.loads(text, object_pairs_hook=list)
    assert json.dumps(json.loads(text), separators=(",", ":")).encode() == text, "compact, nothing dropped"
    top = dict(doc)
    assert [k for k, _ in doc] == (["supersedes"] if supersedes else []) + ["packs"]
    assert top.get("supersedes", []) == supersedes
    assert len(top["packs"]) == len(packs)
    for pairs, pack in zip(top["packs"], packs, strict=True):
        assert [k for k, _ in pairs] == ["id", "blobs"]
        assert dict(pairs)["id"] == pack.id
        for blob_pairs, blob in zip(dict(pairs)["blobs"], pack.blobs, strict=True):
            keys = ["id", "type", "offset", "length"] + (
                [] if blob.uncompressed_length is None else ["uncompressed_length"]
            )
            assert [k for k, _ in blob_pairs] == keys
            assert [v for _, v in blob_pairs] == [getattr(blob, k) for k in keys]


def test_formatted_index_is_the_json_document() -> None:
    rng = random.Random(5)
    packs = [
        Pack(
            os.urandom(32).hex(),
            b"",
            tuple(
                PackedBlob(
                    os.urandom(32).hex(),
                    rng.choice(["data", "tree"]),
                    rng.randrange(1 << 24),
                    rng.randrange(1, 1 << 23),
                    rng.choice([None, 0, rng.randrange(1 << 23)]),
                )
                for _ in range(rng.randrange(1, 40))
            ),
        )
        for _ in range(5)
    ]
    _check(index_json(packs), packs, [])
    superseded = [os.urandom(32).hex(), os.urandom(32).hex()]
    _check(index_json(packs, superseded), packs, superseded)


def test_ids_that_need_escaping_are_escaped() -> None:
    odd = Pack('pack"\\', b"", (PackedBlob('blob"\n</script>\u2028', "data", 0, 48, None),))
    text = index_json([odd])
    _check(text, [odd], [])
    doc = json.loads(text)
    assert doc["packs"][0]["id"] == 'pack"\\'
    assert doc["packs"][0]["blobs"][0]["id"] == 'blob"\n</script>\u2028'
