"""Process-level helpers for the native engine's bulk paths (backup, restore).

:class:`WorkerProcesses`: a small pool of forked processes for the local backup (see the docstring of
:mod:`.backup`): each inherits a handler (and everything it references: key, index) instead of having it
pickled, answers one message at a time over its own pipe, ignores SIGINT, and dies with its parent
(``PR_SET_PDEATHSIG``); :meth:`WorkerProcesses.terminate` kills them all at once (abort, cancellation).
With ``depth`` 2 a worker's next message waits in its pipe while it works on the current one, so it never
idles while the parent (busy with other work on its event loop) gets round to handing it the next.

:func:`tune_malloc`: glibc's ``malloc`` raises its mmap threshold each time a large block is freed (up to
32 MiB), after which pack-sized buffers (16 MiB packs, read windows, restore spans) come from the heap and
its per-thread arenas and stay there once freed: the process's RSS creeps up to well above what it holds.
Fixing the threshold at 8 MiB (and capping the arenas) makes every buffer that large a fresh ``mmap``
returned to the kernel on ``free``. Lower thresholds (256 KiB) cost measurably more CPU in page faults for
little less memory; 8 MiB kept most of the gain (bench dataset: worker RSS 90 → 61 MiB, CPU +5 %)."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import gc
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 4 * 1024 * 1024
ARENA_MAX = 4


def _libc() -> ctypes.CDLL:
    """glibc, without ``ctypes.util.find_library`` (which runs ``ldconfig -p`` in a subprocess)."""
    return ctypes.CDLL("libc.so.6" if sys.platform.startswith("linux") else ctypes.util.find_library("c"))


@functools.cache
def tune_malloc() -> bool:
    """Apply the settings above once per process (glibc only; elsewhere a no-op). Whether they applied."""
    try:
        libc = _libc()
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_ARENA_MAX, ARENA_MAX),
        )
    )
    if not ok:
        log.debug("mallopt refused a setting; leaving malloc as it is")
    return ok


COLLECT_EVERY = 100_000
"""Allocations between two young-generation collections in the bulk paths (Python's default: 700)."""


class _Collections:
    """How many :func:`fewer_collections` blocks are open, and the thresholds to put back after the last."""

    depth = 0
    saved = gc.get_threshold()


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the garbage collector less often inside the block (nested blocks share it; the event loop's thread
    only). A restore's walk allocates a few objects per file (parsed tree nodes, tuples, lists) with no
    reference cycles among them; at the default thresholds the collector ran every 700 allocations: ~300 times
    in a restore of the 1 GiB bench set, 0.1 s of the coordinator's 0.5 s of CPU, while both workers wanted the
    two cores (31 times, 0.015 s, with this). The worker processes run so from the start (:func:`_serve`)."""
    if _Collections.depth == 0:
        _Collections.saved = gc.get_threshold()
        gc.set_threshold(COLLECT_EVERY, 50, 1000)
    _Collections.depth += 1
    try:
        yield
    finally:
        _Collections.depth -= 1
        if _Collections.depth == 0:
            gc.set_threshold(*_Collections.saved)


class WorkerDied(Exception):
    """A worker process exited (killed, or crashed) before answering."""


def _serve(conn: Connection, handler: Callable[[Any], Any]) -> None:
    """A worker process's loop: answer each message with ``("ok", handler(message))`` or ``("error", exc)``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    _die_with_parent()
    # Per chunk and per file a worker allocates a few tuples, lists and strings (no reference cycles): at the
    # default thresholds the collector ran every few hundred chunks for ~5 % of the workers' CPU (perf).
    gc.set_threshold(COLLECT_EVERY, 50, 1000)
    code = 0
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            if message is None:
                break
            try:
                reply: tuple[str, Any] = ("ok", handler(message))
            except BaseException as e:
                reply = ("error", e)
            try:
                conn.send(reply)
            except (pickle.PicklingError, TypeError, AttributeError):
                conn.send(("error", RuntimeError(f"{type(reply[1]).__name__}: {reply[1]}")))
            except (BrokenPipeError, OSError):
                break
    except BaseException:
        code = 1
    finally:
        # Not sys.exit: the forked copy of the parent's atexit handlers, asyncio loop and threads' state must
        # not run here.
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the parent dies (a killed backup leaves no orphan workers)."""
    try:
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods() and sys.platform.startswith("linux")


class _Turns:
    """Replies come back on a worker's pipe in the order its messages went: each exchange takes a ticket when
    it sends and receives when its ticket's turn comes."""

    def __init__(self) -> None:
        self.sending = threading.Lock()
        self.turn = threading.Condition()
        self.sent = 0
        self.received = 0


class WorkerProcesses:
    """``count`` forked processes, each answering messages with ``handler`` (which they inherit, with everything
    it references: no pickling of the handler). The parent sends a worker up to ``depth`` messages at a time
    and awaits each reply; only the messages and replies cross the process boundary (pickled through a pipe).

    Create it on the event loop's thread (``PR_SET_PDEATHSIG`` follows the forking thread's life).
    :meth:`terminate` kills the workers at once (abort, cancellation); :meth:`close` lets them finish.
    """

    def __init__(
        self, count: int, handler: Callable[[Any], Any], *, name: str = "native-worker", depth: int = 1
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.conns: list[Connection] = []
        self.processes: list[BaseProcess] = []
        self.turns: list[_Turns] = []
        self.idle: asyncio.Queue[int] = asyncio.Queue()
        """A worker's number once for each message it may be sent now."""
        # The children's garbage collector would visit (and so copy, page by page) every object they inherit;
        # frozen, those stay shared with the parent. The parent unfreezes its own right after the forks.
        gc.freeze()
        try:
            for i in range(max(1, count)):
                parent, child = context.Pipe()
                process = context.Process(target=_serve, args=(child, handler), name=f"{name}-{i}", daemon=True)
                process.start()
                child.close()
                self.conns.append(parent)
                self.processes.append(process)
                self.turns.append(_Turns())
                for _ in range(max(1, depth)):
                    self.idle.put_nowait(i)
        finally:
            gc.unfreeze()

    def __len__(self) -> int:
        return len(self.processes)

    async def _idle(self) -> int:
        worker = await self.idle.get()
        if worker < 0:  # stopped: wake the next waiter too
            self.idle.put_nowait(worker)
            raise WorkerDied("the worker processes were stopped")
        return worker

    def wake_waiters(self) -> None:
        """After :meth:`terminate` (on the event loop's thread): calls still waiting for a worker fail."""
        self.idle.put_nowait(-1)

    async def call(self, message: Callable[[int], Any]) -> Any:
        """Send ``message(worker number)`` to the next worker with room; its reply (its exception raised here)."""
        worker = await self._idle()
        try:
            return await self._ask(worker, message(worker))
        finally:
            self.idle.put_nowait(worker)

    async def broadcast(self, message: Any) -> list[Any]:
        """Send ``message`` to every worker (each once it has room: after the messages it was sent before);
        their replies, in worker order."""
        taken: list[int] = []  # a worker's second turn is held too until every worker has given one
        try:
            while len(set(taken)) < len(self.processes):
                taken.append(await self._idle())
        except BaseException:
            for worker in taken:
                self.idle.put_nowait(worker)
            raise
        try:
            replies = await asyncio.gather(*(self._ask(w, message) for w in range(len(self.processes))))
        finally:
            for worker in taken:
                self.idle.put_nowait(worker)
        return list(replies)

    async def _ask(self, worker: int, message: Any) -> Any:
        conn, turns = self.conns[worker], self.turns[worker]

        def exchange() -> tuple[str, Any]:
            with turns.sending:
                conn.send(message)
                ticket = turns.sent
                turns.sent += 1
            with turns.turn:
                turns.turn.wait_for(lambda: turns.received == ticket)
                try:
                    reply: tuple[str, Any] = conn.recv()
                finally:
                    turns.received += 1
                    turns.turn.notify_all()
            return reply

        try:
            status, value = await asyncio.to_thread(exchange)
        except (EOFError, OSError) as e:
            raise WorkerDied(f"worker process {self.processes[worker].name} exited: {e or type(e).__name__}") from None
        if status == "error":
            raise value
        return value

    async def close(self) -> None:
        """Ask every worker to exit and wait for them."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(None)
        await asyncio.to_thread(self._join, 10.0)

    def terminate(self) -> None:
        """Kill every worker now (SIGKILL: no pack half-written under its final name, as writes are atomic)."""
        for process in self.processes:
            if process.is_alive():
                process.kill()
        self._join(5.0)

    def _join(self, timeout: float) -> None:
        for process in self.processes:
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(1.0)
        for conn in self.conns:
            conn.close()
