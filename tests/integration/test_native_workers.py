"""The native backup's worker processes (``backup(processes=True)``, the default on a local store) against
restic 0.14 as the oracle, and the thread path they replace on a local store (``processes=False``).

- Both paths produce a repository ``restic check --read-data`` accepts, which ``restic restore`` and the
  native restore reproduce byte for byte.
- A second backup through worker processes reads only the changed file and stores its new blob.
- A cancelled backup stops its worker processes at once: none is left running, and the repository still
  checks clean (the packs they wrote unindexed are recovered by the next backup).
- A worker process killed from outside fails the call (no hang) and leaves no other worker behind; calls
  still waiting for a worker fail once the pool is stopped.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kubestash.engine.native.backup import backup
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.restore import restore
from kubestash.engine.native.store import LocalStore
from kubestash.engine.native.workers import WorkerDied, WorkerProcesses
from restic_helpers import PASSWORD, describe, make_tree, restored_at

CHEAP = KdfParams(1024, 8, 1)


def restic(repo: Path, *args: str) -> str:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    done = subprocess.run(
        ["restic", "--no-cache", *args], env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def children() -> set[int]:
    """This process's live (not zombie) child processes."""
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        for pid in Path(f"/proc/{os.getpid()}/task/{task}/children").read_text().split():
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                found.add(int(pid))
    return found


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = make_tree(tmp_path_factory.mktemp("workers-src"))
    (tree / "big.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    for i in range(600):
        folder = tree / "many" / f"d{i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03d}").write_bytes(os.urandom(i * 37 % 5000 + 1))
    return tree


@pytest.mark.parametrize("processes", [True, False], ids=["processes", "threads"])
def test_backup_checks_and_restores(tmp_path: Path, source: Path, processes: bool) -> None:
    repo_dir = tmp_path / "repo"

    async def scenario() -> str:
        repo = await init_repository(LocalStore(repo_dir), PASSWORD, kdf=CHEAP)
        before = children()
        first = await backup(repo, [str(source)], processes=processes, pack_size=4 * 1024 * 1024)
        assert children() == before  # the workers are gone once the backup returns
        assert first.files_read == first.total_files_processed and not first.unreadable
        (source / "many" / "d1" / "f100").write_bytes(b"changed " * 100)
        try:
            read: list[str] = []
            second = await backup(repo, [str(source)], processes=processes, parent="latest", on_read=read.append)
            assert read == [str(source / "many" / "d1" / "f100")]
            assert second.files_read == 1 and second.data_blobs == 1
            await restore(repo, "latest", tmp_path / "native-restore")
        finally:
            (source / "many" / "d1" / "f100").write_bytes(os.urandom(100 * 37 % 5000 + 1))
        return second.snapshot_id

    snapshot = asyncio.run(scenario())
    restic(repo_dir, "check", "--read-data")
    restic(repo_dir, "restore", snapshot, "--target", str(tmp_path / "restic-restore"))
    restored = describe(restored_at(tmp_path / "restic-restore", source))
    assert restored == describe(restored_at(tmp_path / "native-restore", source))
    assert restored["many/d1/f100"][-1] == b"changed " * 100
    # The other files are the source's (f100 was put back to other bytes after the backup).
    original = describe(source)
    assert {k: v for k, v in restored.items() if k != "many/d1/f100"} == {
        k: v for k, v in original.items() if k != "many/d1/f100"
    }


def test_cancelled_backup_leaves_no_workers(tmp_path: Path, source: Path) -> None:
    repo_dir = tmp_path / "repo"

    async def scenario() -> None:
        repo = await init_repository(LocalStore(repo_dir), PASSWORD, kdf=CHEAP)
        before = children()
        task = asyncio.create_task(backup(repo, [str(source)], processes=True, pack_size=1024 * 1024))
        for _ in range(400):  # until the workers exist
            await asyncio.sleep(0.005)
            if children() - before:
                break
        assert children() - before, "the backup forked no worker process"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert children() == before
        repo = await NativeRepository.open(LocalStore(repo_dir), PASSWORD)
        summary = await backup(repo, [str(source)], processes=True)  # completes, recovering what was written
        assert not summary.unreadable

    asyncio.run(scenario())
    restic(repo_dir, "check", "--read-data")


def test_killed_worker_fails_the_call() -> None:
    async def scenario() -> None:
        before = children()
        procs = WorkerProcesses(2, lambda message: os.getpid() if message == "pid" else os.kill(os.getpid(), 9))
        try:
            pid = await procs.call(lambda worker: "pid")
            assert pid in children() - before
            with pytest.raises(WorkerDied):
                await procs.broadcast("die")
        finally:
            procs.terminate()
        assert children() == before

    asyncio.run(scenario())


def test_worker_exception_is_raised_in_the_parent() -> None:
    def handler(message: object) -> object:
        raise ValueError(f"bad {message}")

    async def scenario() -> None:
        procs = WorkerProcesses(1, handler)
        try:
            with pytest.raises(ValueError, match="bad 7"):
                await procs.call(lambda worker: 7)
        finally:
            await procs.close()

    asyncio.run(scenario())
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # only the workers ignore Ctrl-C


def test_calls_waiting_for_a_worker_fail_once_stopped() -> None:
    async def scenario() -> None:
        procs = WorkerProcesses(1, time.sleep)
        busy = asyncio.create_task(procs.call(lambda worker: 30))
        await asyncio.sleep(0.2)
        waiting = asyncio.create_task(procs.call(lambda worker: 0))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(procs.terminate)
        procs.wake_waiters()
        for task in (busy, waiting):
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(task, 10)

    asyncio.run(scenario())


def _echo_after(message: tuple[str, float]) -> tuple[str, int]:
    time.sleep(message[1])
    return message[0], os.getpid()


def test_pipelined_calls_get_their_own_replies() -> None:
    """With ``depth=2`` a worker is sent its next message while it works on the current one: every caller
    still gets the reply to its own message."""

    async def scenario() -> None:
        procs = WorkerProcesses(2, _echo_after, depth=2)
        try:
            delays = [(i * 7 % 5) / 1000 for i in range(60)]
            calls = [procs.call(lambda worker, i=i, d=d: (f"m{i}", d)) for i, d in enumerate(delays)]
            replies = await asyncio.gather(*calls)
            assert [name for name, _ in replies] == [f"m{i}" for i in range(60)]
            assert {pid for _, pid in replies} == {p.pid for p in procs.processes}
            assert sorted(await procs.broadcast(("all", 0.0))) == sorted(("all", p.pid) for p in procs.processes)
        finally:
            await procs.close()

    asyncio.run(scenario())


_handled: list[str] = []


def _record(message: str) -> list[str] | str:
    if message == "handled":
        return list(_handled)
    time.sleep(0.02)
    _handled.append(message)
    return message


def test_broadcast_comes_after_the_messages_sent_before() -> None:
    """What the restore's ``drain`` relies on: a broadcast reaches a worker after every message it was sent
    before, those already in its pipe included."""

    async def scenario() -> None:
        procs = WorkerProcesses(1, _record, depth=2)
        try:
            calls = [asyncio.create_task(procs.call(lambda worker, i=i: f"m{i}")) for i in range(4)]
            await asyncio.sleep(0.01)  # m0 and m1 sent, m2 and m3 waiting for room
            assert await procs.broadcast("handled") == [["m0", "m1", "m2", "m3"]]
            assert await asyncio.gather(*calls) == ["m0", "m1", "m2", "m3"]
        finally:
            await procs.close()

    asyncio.run(scenario())


def _wait_for_file(message: str) -> str:
    while not os.path.exists(message):
        time.sleep(0.01)
    return message


def test_pipelined_worker_has_its_next_message_waiting(tmp_path: Path) -> None:
    async def scenario() -> None:
        procs = WorkerProcesses(1, _wait_for_file, depth=2)
        gate = tmp_path / "gate"
        try:
            first = asyncio.create_task(procs.call(lambda worker: str(gate)))
            second = asyncio.create_task(procs.call(lambda worker: str(tmp_path)))
            for _ in range(500):
                await asyncio.sleep(0.01)
                if procs.turns[0].sent == 2:
                    break
            # Both went down the pipe while the worker is still on the first: no round trip between them.
            assert procs.turns[0].sent == 2 and not first.done() and not second.done()
            gate.touch()
            assert await asyncio.wait_for(asyncio.gather(first, second), 10) == [str(gate), str(tmp_path)]
        finally:
            await procs.close()

    asyncio.run(scenario())


def test_killed_pipelined_worker_fails_every_call_sent_to_it() -> None:
    async def scenario() -> None:
        before = children()
        procs = WorkerProcesses(1, time.sleep, depth=2)
        try:
            calls = [asyncio.create_task(procs.call(lambda worker: 30)) for _ in range(3)]
            await asyncio.sleep(0.3)
            os.kill(procs.processes[0].pid or 0, signal.SIGKILL)
            for call in calls[:2]:
                with pytest.raises(WorkerDied):
                    await asyncio.wait_for(call, 10)
            await asyncio.to_thread(procs.terminate)
            procs.wake_waiters()
            with pytest.raises(WorkerDied):
                await asyncio.wait_for(calls[2], 10)
        finally:
            procs.terminate()
        assert children() == before

    asyncio.run(scenario())
