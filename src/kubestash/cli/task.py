"""``kubestash task``: the task runner a backup or restore process executes (a Job's container in a cluster,
a process started by the local executor in embedded mode). Not meant to be typed by users."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lightkube import AsyncClient

WARM_UP_TIMEOUT = 2.0


@click.group(hidden=True)
def task() -> None:
    """Run one backup or restore component (used by executors)."""


@task.command("backup")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--namespace", required=True)
@click.option("--snapshot", required=True, help="The Snapshot whose component to back up.")
@click.option("--component", required=True)
def backup(kubeconfig: Path | None, namespace: str, snapshot: str, component: str) -> None:
    """Back up one component of a Snapshot; exit 0 only when it Succeeded."""
    from kubestash.engine.select import configured_engine
    from kubestash.tasks.backup import run_backup

    _logging()
    sys.exit(_run(kubeconfig, lambda client: run_backup(client, configured_engine(), namespace, snapshot, component)))


@task.command("restore")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--namespace", required=True)
@click.option("--restoresession", required=True)
@click.option("--snapshot", required=True, help="The Snapshot the RestoreSession's data source resolved to.")
@click.option("--snapshot-namespace", required=True)
@click.option("--component", required=True)
def restore(
    kubeconfig: Path | None, namespace: str, restoresession: str, snapshot: str, snapshot_namespace: str, component: str
) -> None:
    """Restore one component of a Snapshot into a RestoreSession's target; exit 0 only when it Succeeded."""
    from kubestash.engine.select import configured_engine
    from kubestash.tasks.restore import run_restore

    _logging()
    sys.exit(
        _run(
            kubeconfig,
            lambda client: run_restore(
                client, configured_engine(), namespace, restoresession, snapshot, snapshot_namespace, component
            ),
        )
    )


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _run(kubeconfig: Path | None, body: Callable[[AsyncClient], Awaitable[int]]) -> int:
    from kubestash.controllers.manager import client_from

    prepared = _take_prepared(kubeconfig)
    runner = prepared[0] if prepared is not None else asyncio.Runner()

    async def main() -> int:
        # The executor stops a task with SIGTERM (deadline, deletion): unwind, so that the engine stops restic
        # and a restore removes its staging directory, instead of dying mid-write.
        current = asyncio.current_task()
        assert current is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
        client = prepared[1] if prepared is not None else client_from(kubeconfig)
        try:
            return await body(client)
        except asyncio.CancelledError:
            return 128 + signal.SIGTERM
        finally:
            await client.close()

    with runner:
        return runner.run(main())


_prepared: list[tuple[Path, tuple[int, int, int] | None, asyncio.Runner, AsyncClient]] = []
"""A warm process's event loop and API client (at most one), made before its task arrived (see :func:`warm`),
with the kubeconfig they were made from and that file's identity then."""


def _identity(kubeconfig: Path) -> tuple[int, int, int] | None:
    try:
        stat = kubeconfig.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _take_prepared(kubeconfig: Path | None) -> tuple[asyncio.Runner, AsyncClient] | None:
    """The prepared loop and client when they were made from this kubeconfig, unchanged since (credentials
    may have been rewritten meanwhile); otherwise they are closed and the task makes its own."""
    if not _prepared:
        return None
    made_from, identity, runner, client = _prepared.pop()
    if made_from == kubeconfig and identity is not None and identity == _identity(made_from):
        return runner, client
    with runner:
        runner.run(client.close())
    return None


def _prepare(kubeconfig: Path | None) -> None:
    """Make the task's event loop and API client now, and send one request with them: the HTTP stack imports
    lazily (tens of milliseconds) and the first request opens the TLS connection. Best effort: a failure here
    leaves the task to do it all itself, as a cold process would. Without an explicit kubeconfig the client is
    only used to warm up, not kept (in-cluster credentials are files that change)."""
    from kubestash.controllers.common import get_or_none
    from kubestash.controllers.kinds import by_kind
    from kubestash.controllers.manager import client_from

    identity = _identity(kubeconfig) if kubeconfig is not None else None
    try:
        client = client_from(kubeconfig)
    except Exception:
        return  # an unreadable kubeconfig is the task's to report
    runner = asyncio.Runner()

    async def probe() -> None:
        # Any small request does; a name that never exists costs the API server one lookup. Two at once open
        # two connections: the task's first reads go out two at a time.
        requests = [get_or_none(client, by_kind("Snapshot"), "kubestash-warm-up", "default") for _ in range(2)]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*requests), WARM_UP_TIMEOUT)
        if kubeconfig is None:
            await client.close()

    runner.run(probe())
    if kubeconfig is None:
        runner.close()
    else:
        _prepared.append((kubeconfig, identity, runner, client))


@task.command("warm")
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path), default=None)
def warm(kubeconfig: Path | None) -> None:
    """Import the task runner, then run the task whose arguments arrive on stdin as a JSON list.

    The local executor keeps such processes ready, so a backup does not wait for the interpreter to start.
    ``--kubeconfig`` is the one the executor's tasks will get: the API client is made (and connected) ahead too.
    """
    import json

    import kubestash.controllers.manager
    import kubestash.tasks.backup
    import kubestash.tasks.restore  # noqa: F401
    from kubestash.engine.select import configured_engine

    configured_engine()  # imports the engine the tasks will use (restic's wrapper, or the native engine)
    _prepare(kubeconfig)

    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(0)  # the executor shut down before handing out work
    task.main(args=json.loads(line), prog_name="kubestash task")


if __name__ == "__main__":
    from kubestash.cli.main import run_and_leave

    run_and_leave(task)
