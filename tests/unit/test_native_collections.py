"""``workers.fewer_collections``: the collector runs less often inside, the thresholds come back after the last
of nested blocks (two restores on one event loop overlap), even when a block fails."""

from __future__ import annotations

import gc

import pytest

from kubestash.engine.native.workers import COLLECT_EVERY, fewer_collections


def test_nested_blocks_share_the_setting_and_the_last_one_restores_it() -> None:
    before = gc.get_threshold()
    with fewer_collections():
        assert gc.get_threshold()[0] == COLLECT_EVERY
        with fewer_collections():
            assert gc.get_threshold()[0] == COLLECT_EVERY
        assert gc.get_threshold()[0] == COLLECT_EVERY, "the inner block's end left the outer one relaxed"
    assert gc.get_threshold() == before


def test_a_failing_block_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("restore failed")
    assert gc.get_threshold() == before
