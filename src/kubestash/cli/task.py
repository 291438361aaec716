"""``kubestash task``: the task runner a backup or restore process executes (a Job's container in a cluster,
a process started by the local executor in embedded mode). Not meant to be typed by users."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from lightkube import AsyncClient


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

    async def main() -> int:
        # The executor stops a task with SIGTERM (deadline, deletion): unwind, so that the engine stops restic
        # and a restore removes its staging directory, instead of dying mid-write.
        current = asyncio.current_task()
        assert current is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
        client = client_from(kubeconfig)
        try:
            return await body(client)
        except asyncio.CancelledError:
            return 128 + signal.SIGTERM
        finally:
            await client.close()

    return asyncio.run(main())


@task.command("warm")
def warm() -> None:
    """Import the task runner, then run the task whose arguments arrive on stdin as a JSON list.

    The local executor keeps such processes ready, so a backup does not wait for the interpreter to start.
    """
    import json

    import kubestash.controllers.manager
    import kubestash.tasks.backup
    import kubestash.tasks.restore  # noqa: F401
    from kubestash.engine.select import configured_engine

    configured_engine()  # imports the engine the tasks will use (restic's wrapper, or the native engine)

    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(0)  # the executor shut down before handing out work
    task.main(args=json.loads(line), prog_name="kubestash task")


if __name__ == "__main__":
    task()
