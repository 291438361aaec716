"""What every engine does around an operation, whichever engine runs it.

Progress callbacks are best effort, messages never carry a secret, restore patterns can be relative to the
snapshot's one path, and creating a local repository is serialized across processes. Both the restic engine
and the native one use these, so the two behave the same at the :class:`~kubestash.engine.base.Engine`
boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from kubestash.engine.base import Progress, ProgressCallback, RepositoryTarget

logger = logging.getLogger(__name__)

REMOTE_SCHEMES = ("s3:", "gs:", "azure:", "b2:", "sftp:", "rest:", "swift:", "rclone:")


def report(on_progress: ProgressCallback | None, progress: Progress) -> None:
    """Call ``on_progress``; a failing callback is logged, never fails the operation."""
    if on_progress is None:
        return
    try:
        on_progress(progress)
    except Exception:
        logger.warning("progress callback failed", exc_info=True)


def hidden(repo: RepositoryTarget) -> tuple[str, ...]:
    """Every secret of ``repo``: what messages about it must not contain."""
    return (*repo.secrets, repo.password)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***`` (longest first, so a secret's prefix never leaks)."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def rooted(pattern: str, root: str | None) -> str:
    """An absolute pattern relative to the snapshot's own path (``/app`` → ``<root>/app``)."""
    if root is None or not pattern.startswith("/"):
        return pattern
    return root.rstrip("/") + pattern.rstrip("/") if pattern.rstrip("/") else root


@contextlib.asynccontextmanager
async def local_repo_lock(url: str) -> AsyncIterator[None]:
    """An exclusive ``flock`` on a local repository's directory (created if missing); no-op for remote URLs."""
    if url.startswith(REMOTE_SCHEMES):
        yield
        return
    path = Path(url.removeprefix("local:"))
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # the engine reports the real problem
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
