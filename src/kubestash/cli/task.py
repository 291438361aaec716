"""``kubestash task``: the task runner a backup or restore process executes (a Job's container in a cluster,
a process started by the local executor in embedded mode). Not meant to be typed by users."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click


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
    from kubestash.controllers.manager import client_from
    from kubestash.engine.restic import ResticEngine
    from kubestash.tasks.backup import run_backup

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    async def main() -> int:
        client = client_from(kubeconfig)
        try:
            return await run_backup(client, ResticEngine(), namespace, snapshot, component)
        finally:
            await client.close()

    sys.exit(asyncio.run(main()))


@task.command("warm")
def warm() -> None:
    """Import the task runner, then run the task whose arguments arrive on stdin as a JSON list.

    The local executor keeps such processes ready, so a backup does not wait for the interpreter to start.
    """
    import json

    import kubestash.engine.restic
    import kubestash.tasks.backup  # noqa: F401

    line = sys.stdin.readline()
    if not line.strip():
        sys.exit(0)  # the executor shut down before handing out work
    task.main(args=json.loads(line), prog_name="kubestash task")


if __name__ == "__main__":
    task()
