"""Content-defined chunking for the native backup, through the ``fastcdc`` package's compiled (Cython) path.

restic chunks with a Rabin fingerprint keyed by the repository's ``chunker_polynomial``; the format does not
care how blobs were cut (a blob id is only the SHA-256 of its bytes), so the native engine uses FastCDC,
which is several times faster in Python. Cross-engine deduplication of *data* therefore happens through the
parent-snapshot rule (unchanged files reuse the parent's content list), not through equal chunk boundaries.

``fastcdc`` ships no type information, hence this small typed wrapper. Its Cython loop holds the GIL, but it
skips the first ``min_size`` bytes of every chunk and runs at several GB/s, so it is never the bottleneck.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Callable, Iterable
from typing import Any

Buffer = bytes | bytearray | memoryview | mmap.mmap

MIN_SIZE = 512 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 8 * 1024 * 1024


@functools.cache
def _fastcdc() -> Callable[..., Iterable[Any]]:
    """Imported on first use: the package pulls in ``click`` (~50 ms of start-up an unchanged backup skips)."""
    from fastcdc.fastcdc_cy import fastcdc_cy  # type: ignore[import-untyped]

    return fastcdc_cy  # type: ignore[no-any-return]


def boundaries(
    data: Buffer, *, min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE, max_size: int = MAX_SIZE
) -> list[tuple[int, int]]:
    """``(offset, length)`` of each chunk of ``data`` (empty data has no chunks)."""
    view = memoryview(data)
    if len(view) == 0:
        return []
    if len(view) <= min_size:
        return [(0, len(view))]
    return [
        (int(c.offset), int(c.length))
        for c in _fastcdc()(view, min_size=min_size, avg_size=avg_size, max_size=max_size, fat=False)
    ]


def preload() -> None:
    """Import the chunker now (before forking worker processes, which then inherit it)."""
    _fastcdc()
