"""The local executor: each backup or restore component runs as a process of its own on this machine.

This is embedded mode's stand-in for a Kubernetes Job. The process is the same task runner a Job's container
runs (``kubestash task ...``): it reads its objects from the API server and reports into their status, so a
controller sees no difference. What only the executor knows is whether the process is still alive; when one
exits, ``on_exit`` tells the owning controller, which compares the exit with what the task reported (a
process killed before reporting is a failure the user must see, not a session that waits forever).

Processes get their own process group, so a deadline or a shutdown stops the task *and* the engine it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

KILL_GRACE = 3.0
EXIT_SUCCEEDED = 0
EXIT_REPORTED_FAILURE = 3
"""The task reported its failure into status itself; any other non-zero exit is a crash nobody reported."""


@dataclass(frozen=True)
class Invocation:
    key: str
    """Unique per task run, e.g. ``<namespace>/<snapshot>/<component>``."""
    argv: tuple[str, ...]
    owner: tuple[str, str]
    """(namespace, name) of the object whose controller is told about the exit."""
    env: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass
class _Run:
    invocation: Invocation
    process: asyncio.subprocess.Process
    returncode: int | None = None
    killed_for: str | None = None
    done_with: bool = False
    """Its owner forgot it while it still ran (reported, but not exited yet)."""


ExitCallback = Callable[[Invocation, int, str | None], None]


class LocalExecutor:
    def __init__(self, on_exit: ExitCallback | None = None, *, warm: int = 2, kubeconfig: str | None = None) -> None:
        """``warm`` task processes are kept ready; ``kubeconfig`` is the one the tasks are given, so that those
        processes can make their API client (and connection) before their task arrives."""
        self._on_exit = on_exit
        self._runs: dict[str, _Run] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._warm: list[asyncio.subprocess.Process] = []
        self._warm_size = warm
        self._warm_argv = task_command("warm", *(("--kubeconfig", kubeconfig) if kubeconfig else ()))
        self._refilling = asyncio.Lock()
        self._stopped = False

    def set_exit_callback(self, on_exit: ExitCallback) -> None:
        self._on_exit = on_exit

    def known(self, key: str) -> bool:
        return key in self._runs

    def running(self, key: str) -> bool:
        run = self._runs.get(key)
        return run is not None and run.returncode is None

    def returncode(self, key: str) -> int | None:
        run = self._runs.get(key)
        return None if run is None else run.returncode

    def kill_reason(self, key: str) -> str | None:
        """Why the executor stopped this task (deadline, deletion, shutdown), if it did."""
        run = self._runs.get(key)
        return None if run is None else run.killed_for

    def unreported_end(self, key: str, what: str) -> str | None:
        """Why task ``key`` ended without reporting a result (killed, crashed, lost in an operator restart);
        None while it runs or when its exit code says it reported. ``what`` names it: "backup", "restore"."""
        if self.running(key):
            return None
        code = self.returncode(key)
        reason = self.kill_reason(key)
        if reason is not None:
            return reason
        if code in (EXIT_SUCCEEDED, EXIT_REPORTED_FAILURE):
            return None  # it reported; the report may not have reached the caller's cache yet
        if code is None:
            return f"the {what} process was lost (the operator restarted while it ran)"
        return f"the {what} process exited with code {code} before reporting a result"

    async def launch(self, invocation: Invocation) -> bool:
        """Start the process unless this key already ran; True if started now.

        A task command gets a pre-started process that has already imported the task runner (about 0.6 s
        of every backup otherwise): it reads its arguments from stdin. It is still one fresh process per
        task, with the same exit codes and signals; only the interpreter start-up happened earlier.

        The used process is replaced at once when the pool runs empty, else once runs are forgotten (their
        sessions ended): a new interpreter's start-up is most of a second of CPU that would otherwise compete
        with the task that just started.
        """
        if invocation.key in self._runs:
            return False
        task_args = _task_args(invocation.argv)
        process = self._warm.pop(0) if task_args is not None and self._warm and not invocation.env else None
        if process is not None and process.returncode is None and process.stdin is not None:
            assert task_args is not None
            process.stdin.write(json.dumps(task_args).encode() + b"\n")
            await process.stdin.drain()
            process.stdin.close()
        else:
            process = await self._spawn(invocation.argv, invocation.env)
        run = _Run(invocation, process)
        self._runs[invocation.key] = run
        task = asyncio.get_running_loop().create_task(self._watch(run), name=f"executor-{invocation.key}")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)
        log.info("started %s (pid %d)", invocation.key, process.pid)
        if task_args is not None and not self._warm:
            await self._refill()
        return True

    async def prewarm(self) -> None:
        """Start the pre-started processes now, so even the first backup does not wait for an interpreter."""
        await self._refill()

    async def _refill(self) -> None:
        async with self._refilling:  # one at a time: two refills would both see room and overfill
            while len(self._warm) < self._warm_size and not self._stopped:
                warm = await asyncio.create_subprocess_exec(
                    *self._warm_argv, stdin=asyncio.subprocess.PIPE, start_new_session=True
                )
                self._warm.append(warm)

    def _refill_later(self) -> None:
        """Top the pool up in the background (nobody is waiting for it)."""
        if len(self._warm) >= self._warm_size or self._stopped:
            return
        task = asyncio.get_running_loop().create_task(self._refill(), name="executor-refill")
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _spawn(self, argv: Sequence[str], env: dict[str, str]) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, env={**os.environ, **env}, start_new_session=True
        )

    async def kill(self, key: str, reason: str) -> None:
        """Stop a running task (SIGTERM to its group, SIGKILL after a grace); ``reason`` reaches on_exit."""
        run = self._runs.get(key)
        if run is None or run.returncode is not None:
            return
        run.killed_for = reason
        await _terminate(run.process)

    async def kill_owned_by(self, owner: tuple[str, str], reason: str) -> None:
        await asyncio.gather(
            *(self.kill(k, reason) for k, r in list(self._runs.items()) if r.invocation.owner == owner)
        )

    def forget(self, keys: Sequence[str]) -> None:
        """Drop finished runs; their owner is done with them (a pre-started process replaces each once it exited)."""
        forgot = False
        for key in keys:
            run = self._runs.get(key)
            if run is not None and run.returncode is not None:
                del self._runs[key]
                forgot = True
            elif run is not None:
                run.done_with = True
        if forgot:
            self._refill_later()

    async def stop(self) -> None:
        """Stop every task still running: on this machine they would otherwise outlive the operator unseen."""
        self._stopped = True
        await asyncio.gather(*(self.kill(k, "the operator stopped") for k in list(self._runs)))
        async with self._refilling:
            warm, self._warm = self._warm, []
        await asyncio.gather(*(_terminate(p) for p in warm))
        for task in list(self._watchers):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._watchers, return_exceptions=True)

    async def _watch(self, run: _Run) -> None:
        code = await run.process.wait()
        run.returncode = code
        log.info("%s exited with %d", run.invocation.key, code)
        if run.done_with:
            self._refill_later()
        if self._on_exit is not None:
            self._on_exit(run.invocation, code, run.killed_for)


async def _terminate(process: asyncio.subprocess.Process) -> None:
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            await asyncio.wait_for(process.wait(), wait)
            return
        except TimeoutError:
            continue


_TASK_MODULE = "kubestash.cli.task"


def task_command(*args: str) -> tuple[str, ...]:
    """The argv of ``kubestash task ...`` with this interpreter (no reliance on PATH)."""
    return (sys.executable, "-m", _TASK_MODULE, *args)


def _task_args(argv: Sequence[str]) -> list[str] | None:
    """The arguments after ``-m kubestash.cli.task`` when argv is a task command of this interpreter."""
    prefix = task_command()
    return list(argv[len(prefix) :]) if tuple(argv[: len(prefix)]) == prefix else None
