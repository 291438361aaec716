"""How a task tells the user what it is doing: its component's entry in a status, patched as it goes.

Backup tasks report into ``Snapshot.status.components[<c>]``, restore tasks into
``RestoreSession.status.components[<c>]``. Each report is a merge patch of that one component, so the
components of one object never overwrite each other; progress goes out at most once per interval and never
queues up behind a slow API server (a report still in flight makes the next one wait its turn or be dropped).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from lightkube import AsyncClient

from kubestash.api.durations import format_go_duration
from kubestash.api.sizes import human_size
from kubestash.controllers.common import patch_status
from kubestash.engine.base import Progress, ProgressCallback

PROGRESS_INTERVAL = 1.0


class TaskFailed(Exception):
    """The task cannot be done; the message is what the user reads in the component's ``error``."""


class StatusReporter:
    def __init__(self, client: AsyncClient, kind: str, namespace: str, name: str, component: str) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.component = component
        self._last = 0.0
        self._pending: asyncio.Task[None] | None = None

    async def update(self, fields: Mapping[str, Any]) -> None:
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
            self._pending = None
        await self._patch(fields)

    def throttled(self, fields_of: Callable[[Progress], Mapping[str, Any]]) -> ProgressCallback:
        """A progress callback reporting ``fields_of(progress)`` at most once per interval."""

        def on_progress(progress: Progress) -> None:
            now = time.monotonic()
            if now - self._last < PROGRESS_INTERVAL or (self._pending is not None and not self._pending.done()):
                return
            self._last = now
            self._pending = asyncio.get_running_loop().create_task(self._patch(fields_of(progress)))

        return on_progress

    async def _patch(self, fields: Mapping[str, Any]) -> None:
        body = {"components": {self.component: dict(fields)}}
        await patch_status(self.client, self.kind, self.name, self.namespace, body)


def progress_status(p: Progress, done_key: str) -> dict[str, Any]:
    """KubeStash's progress fields (``backupDone`` or ``restoreDone`` for the bytes done)."""
    return {
        "secondsElapsed": int(p.seconds_elapsed),
        "percentDone": f"{p.percent_done * 100:.2f}%",
        "totalFiles": p.total_files,
        "filesDone": p.files_done,
        done_key: human_size(p.bytes_done),
        "total": human_size(p.total_bytes),
        "speed": f"{human_size(int(p.bytes_per_second))}/s",
    }


def elapsed(started: float) -> str:
    """Time since the ``time.monotonic()`` reading ``started``, as a Go duration."""
    return format_go_duration(timedelta(seconds=round(time.monotonic() - started, 3)))


def parse_list(text: str) -> list[str]:
    """A comma-separated task parameter (``paths``, ``include``, ``exclude``) as its items."""
    return [p.strip() for p in text.split(",") if p.strip()]
