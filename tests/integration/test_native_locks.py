"""Native repository locks against restic 0.14 as the oracle.

restic must see and honour our locks, we must see and honour restic's, and the lock files must be restic's
format (``restic cat lock`` decodes ours, ``restic unlock`` removes a stale one we wrote). Rules verified:
exclusive vs shared conflicts, stale locks still block (restic 0.14 only lets ``unlock`` remove them), the
200 ms re-check, refresh, and removal on exit, on exception and on cancellation.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubestash.engine.native.files import decode_unpacked, encode_unpacked, storage_id
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.lock import LockedError, list_locks, locked, remove_locks
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore, writable
from kubestash.engine.native.tree import GoTime
from restic_helpers import PASSWORD

CHEAP = KdfParams(n=1024, r=8, p=1)


def restic_env(repo: Path) -> dict[str, str]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return env


def restic(repo: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["restic", "--no-cache", *args],
        input=stdin,
        env=restic_env(repo),
        capture_output=True,
        timeout=120,
        check=False,
    )


async def arestic(repo: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """restic in a thread, so the event loop (and our lock's refresh) keeps running meanwhile."""
    return await asyncio.to_thread(restic, repo, *args, stdin=stdin)


def make_repo(path: Path, version: int = 2) -> NativeRepository:
    return asyncio.run(init_repository(LocalStore(path), PASSWORD, version=version, kdf=CHEAP))


def lock_ids(repo: Path) -> list[str]:
    return sorted(p.name for p in (repo / "locks").iterdir())


def write_lock(repo: NativeRepository, **fields: Any) -> str:
    """A lock file as restic writes it, with the given fields overriding a fresh exclusive lock of this host."""
    doc = {
        "time": GoTime.local(time.time_ns()).to_json(),
        "exclusive": True,
        "hostname": socket.gethostname(),
        "username": "someone",
        "pid": os.getpid(),
        **fields,
    }
    data = encode_unpacked(repo.key, json.dumps(doc).encode(), repo.config.version)
    lock_id = storage_id(data)
    asyncio.run(writable(repo.store).put(f"locks/{lock_id}", data))
    return lock_id


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "repo"


@pytest.fixture
def repo(repo_path: Path) -> NativeRepository:
    return make_repo(repo_path)


@pytest.mark.parametrize("version", [1, 2])
def test_restic_honours_and_decodes_our_exclusive_lock(repo_path: Path, version: int) -> None:
    repository = make_repo(repo_path, version)

    async def main() -> None:
        async with locked(repository, exclusive=True):
            (lock_id,) = lock_ids(repo_path)
            listed = await arestic(repo_path, "list", "locks")
            assert listed.stdout.decode().split() == [lock_id]
            shown = await arestic(repo_path, "--no-lock", "cat", "lock", lock_id)
            assert shown.returncode == 0, shown.stderr.decode()
            doc = json.loads(shown.stdout)
            assert doc["exclusive"] is True and doc["pid"] == os.getpid()
            assert doc["hostname"] == socket.gethostname()
            # v2 lock files are compressed like every unpacked file, v1's are plain JSON
            plain = repository.key.decrypt_bytes((repo_path / "locks" / lock_id).read_bytes())
            assert plain[:1] == (b"\x02" if version == 2 else b"{")
            blocked = await arestic(repo_path, "backup", "--stdin", stdin=b"data")
            assert blocked.returncode != 0
            err = blocked.stderr.decode()
            assert "repository is already locked exclusively" in err and f"PID {os.getpid()}" in err
            assert (await arestic(repo_path, "snapshots")).returncode != 0  # even a shared lock is refused
        assert lock_ids(repo_path) == []
        done = await arestic(repo_path, "backup", "--stdin", stdin=b"data")
        assert done.returncode == 0, done.stderr.decode()

    asyncio.run(main())


@pytest.fixture
def restic_holding_lock(repo_path: Path, repo: NativeRepository) -> Iterator[subprocess.Popen[bytes]]:
    """``restic backup --stdin`` blocked on its open stdin: it holds a shared lock until stdin closes."""
    proc = subprocess.Popen(
        ["restic", "--no-cache", "backup", "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=restic_env(repo_path),
    )
    try:
        deadline = time.monotonic() + 30
        while not lock_ids(repo_path):
            assert time.monotonic() < deadline, "restic did not lock"
            assert proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.3)  # past restic's own re-check
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.write(b"x")
        proc.stdin.close()
        proc.wait(timeout=60)


def test_we_honour_restics_lock(repo: NativeRepository, restic_holding_lock: subprocess.Popen[bytes]) -> None:
    pid = restic_holding_lock.pid

    async def main() -> None:
        (info,) = await list_locks(repo)
        assert (info.pid, info.exclusive, info.stale, info.hostname) == (pid, False, False, socket.gethostname())
        with pytest.raises(LockedError) as caught:
            async with locked(repo, exclusive=True):
                pytest.fail("an exclusive lock while restic holds one")
        message = str(caught.value)
        assert message.startswith(f"repository is already locked by PID {pid} on {socket.gethostname()} by ")
        assert f"storage ID {info.id[:8]}" in message and PASSWORD not in message
        async with locked(repo, exclusive=False):  # shared locks coexist
            assert len(await list_locks(repo)) == 2
        assert [i.id for i in await list_locks(repo)] == [info.id]
        assert await remove_locks(repo) == 0  # restic's lock is alive: not stale

    asyncio.run(main())


def test_exclusive_and_shared_rules_between_our_own_locks(repo: NativeRepository, repo_path: Path) -> None:
    async def main() -> None:
        async with locked(repo, exclusive=False):
            async with locked(repo, exclusive=False):
                assert len(lock_ids(repo_path)) == 2
            with pytest.raises(LockedError, match="already locked by PID"):
                async with locked(repo, exclusive=True):
                    pass
        async with locked(repo, exclusive=True):
            with pytest.raises(LockedError, match="already locked exclusively by PID"):
                async with locked(repo, exclusive=False):
                    pass
        assert lock_ids(repo_path) == []

    asyncio.run(main())


def test_concurrent_exclusive_locks_do_not_both_win(repo: NativeRepository, repo_path: Path) -> None:
    """Both write their lock before either looks (the first check passes for both): the re-check after
    writing must stop at least one."""
    winners = 0

    async def contender(started: asyncio.Barrier) -> None:
        nonlocal winners
        await started.wait()
        try:
            async with locked(repo, exclusive=True):
                winners += 1
                await asyncio.sleep(0.5)
        except LockedError:
            pass

    async def main() -> None:
        started = asyncio.Barrier(2)
        await asyncio.gather(contender(started), contender(started))

    asyncio.run(main())
    assert winners <= 1
    assert lock_ids(repo_path) == []


def test_stale_locks_block_and_are_removed_by_unlock(repo: NativeRepository, repo_path: Path) -> None:
    old = GoTime.local(time.time_ns() - 31 * 60 * 1_000_000_000).to_json()
    stale_by_age = write_lock(repo, time=old, hostname="elsewhere", pid=1)
    stale_by_pid = write_lock(repo, pid=dead_pid(), exclusive=False)
    fresh_elsewhere = write_lock(repo, hostname="elsewhere", pid=1, exclusive=False)

    async def main() -> None:
        stale = {i.id: i.stale for i in await list_locks(repo)}
        assert stale == {stale_by_age: True, stale_by_pid: True, fresh_elsewhere: False}
        # restic 0.14 refuses to lock while a stale lock exists, and so do we
        with pytest.raises(LockedError, match="locked exclusively by PID 1 on elsewhere"):
            async with locked(repo, exclusive=False):
                pass
        assert await remove_locks(repo) == 2
        assert lock_ids(repo_path) == [fresh_elsewhere]
        async with locked(repo, exclusive=False):  # only a shared lock is left
            pass
        assert await remove_locks(repo, all=True) == 1
        assert lock_ids(repo_path) == []

    asyncio.run(main())
    assert restic(repo_path, "backup", "--stdin", stdin=b"x").returncode == 0
    blocked = write_lock(repo, pid=dead_pid())  # ours, stale: restic's unlock recognises and removes it
    assert restic(repo_path, "backup", "--stdin", stdin=b"x").returncode != 0
    assert restic(repo_path, "unlock").returncode == 0
    assert blocked not in lock_ids(repo_path) and lock_ids(repo_path) == []


def test_unreadable_lock_files_are_ignored_like_restic(repo: NativeRepository, repo_path: Path) -> None:
    junk = os.urandom(32).hex()
    (repo_path / "locks" / junk).write_bytes(os.urandom(100))
    assert restic(repo_path, "backup", "--stdin", stdin=b"x").returncode == 0

    async def main() -> None:
        assert await list_locks(repo) == []
        async with locked(repo, exclusive=True):
            pass
        assert await remove_locks(repo) == 0
        assert await remove_locks(repo, all=True) == 1

    asyncio.run(main())
    assert lock_ids(repo_path) == []


def test_refresh_replaces_the_lock_with_a_newer_one(repo: NativeRepository, repo_path: Path) -> None:
    async def main() -> None:
        async with locked(repo, exclusive=True, refresh_interval=0.3):
            (first,) = await list_locks(repo)
            await asyncio.sleep(1.0)
            # A refresh writes the new lock before it removes the old: a listing in between sees both.
            for _ in range(50):
                found = await list_locks(repo)
                if len(found) == 1:
                    break
                await asyncio.sleep(0.02)
            (later,) = found
            assert later.id != first.id and later.time > first.time and later.exclusive
            shown = await arestic(repo_path, "--no-lock", "cat", "lock", later.id)
            assert shown.returncode == 0, shown.stderr.decode()
        assert lock_ids(repo_path) == []

    asyncio.run(main())


def test_lock_removed_on_exception_and_cancellation(repo: NativeRepository, repo_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="boom"):
            async with locked(repo, exclusive=False):
                assert len(lock_ids(repo_path)) == 1
                raise RuntimeError("boom")
        assert lock_ids(repo_path) == []

        held = asyncio.Event()

        async def hold() -> None:
            async with locked(repo, exclusive=True, refresh_interval=0.05):
                held.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(hold())
        await held.wait()
        await asyncio.sleep(0.2)  # a few refreshes
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert lock_ids(repo_path) == []

    asyncio.run(main())


def test_lock_json_is_restics(repo: NativeRepository, repo_path: Path) -> None:
    async def main() -> None:
        async with locked(repo, exclusive=False):
            (lock_id,) = lock_ids(repo_path)
            doc = json.loads(decode_unpacked(repo.key, (repo_path / "locks" / lock_id).read_bytes()))
        assert list(doc)[:5] == ["time", "exclusive", "hostname", "username", "pid"]
        assert set(doc) <= {"time", "exclusive", "hostname", "username", "pid", "uid", "gid"}
        assert ("uid" in doc) == (os.getuid() != 0)  # Go's omitempty

    asyncio.run(main())
