"""Both engines against one contract: the ``restic`` binary and the native engine, on local repositories and
S3 on moto, with real restic as the oracle of what the native engine writes.

Covers init races, backup/restore fidelity (bytes, modes, symlinks, mtimes, empty directories, excludes),
stdin backups, error classification without leaked secrets, timeouts and cancellation that leave no
process behind and a repository that still checks clean, forget+prune, keys and stale locks. Where the
engines differ on purpose (restic's own messages, its cache directory) the test says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.api.storage import Backend
from kubestash.engine.base import Engine, EngineError, Progress, RepositoryTarget
from kubestash.engine.location import repository_target
from kubestash.engine.native.engine import NativeEngine
from kubestash.engine.restic import classify
from kubestash.engine.select import engine_named
from restic_helpers import PASSWORD, cheapen_key, describe, make_tree, restored_at
from storage_servers import MotoServer, closed_port, moto_server

T = TypeVar("T")


@pytest.fixture(params=["restic", "native"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return engine_named(request.param)


def is_native(engine: Engine) -> bool:
    return isinstance(engine, NativeEngine)


def restic_check(repo: RepositoryTarget, *args: str) -> None:
    """restic itself accepts the repository (the oracle for what the native engine wrote)."""
    done = subprocess.run(
        ["restic", "-r", repo.url, "--no-cache", "check", *args],
        env={**os.environ, "RESTIC_PASSWORD": repo.password},
        capture_output=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


@pytest.fixture
def new_repo(tmp_path: Path) -> RepositoryTarget:
    return RepositoryTarget(url=str(tmp_path / "new-repo"), password=PASSWORD, secrets=(PASSWORD,))


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with moto_server() as server:
        yield server


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def restic_processes(marker: str) -> list[int]:
    """PIDs of live processes whose command line mentions ``marker`` (read from /proc, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


# ---------------------------------------------------------------- local repository


def test_init_is_idempotent_and_race_free(engine: Engine, new_repo: RepositoryTarget) -> None:
    repo = new_repo

    async def scenario() -> list[bool]:
        return list(await asyncio.gather(engine.init(repo), engine.init(repo), type(engine)().init(repo)))

    assert sorted(run(scenario())) == [False, False, True]
    cheapen_key(Path(repo.url), PASSWORD)  # asserts there is exactly one key, and speeds up the rest
    assert run(engine.init(repo)) is False
    config = subprocess.run(
        ["restic", "-r", repo.url, "--no-cache", "cat", "config"],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
        capture_output=True,
        check=True,
    )
    assert b'"version": 2' in config.stdout


def test_backup_restore_round_trip(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    progress: list[Progress] = []

    async def scenario() -> None:
        summary = await engine.backup(
            repo, [tree], excludes=["*.tmp"], host="host-7", tags=["daily", "app"], on_progress=progress.append
        )
        assert summary.snapshot_id
        assert summary.files_new == 4
        assert summary.total_bytes_processed == 6 + 256 * 64 + len("#!/bin/sh\necho hi\n") + 1
        assert summary.started is not None and summary.ended is not None and summary.started <= summary.ended

        snapshots = await engine.snapshots(repo)
        assert len(snapshots) == 1
        snap = snapshots[0]
        assert snap.id.startswith(summary.snapshot_id)
        assert snap.hostname == "host-7"
        assert sorted(snap.tags) == ["app", "daily"]
        assert snap.paths == (str(tree),)
        assert await engine.stats(repo) > 0
        assert await engine.stats(repo, snap.id) > 0
        check = await engine.check(repo, read_data=True)
        assert check.ok, check.message

        restored: list[Progress] = []
        result = await engine.restore(repo, snap.id, tmp_path / "out", on_progress=restored.append)
        assert result.files_restored == 4
        assert result.bytes_restored == summary.total_bytes_processed
        assert restored[-1].percent_done == 1.0

    run(scenario())
    assert progress, "no progress reported"
    assert progress[-1].percent_done == 1.0 and progress[-1].bytes_done == progress[-1].total_bytes
    expected = describe(tree)
    del expected["scratch.tmp"]
    assert describe(restored_at(tmp_path / "out", tree)) == expected
    # Whichever engine wrote it, restic reads it.
    restic_check(repo, "--read-data")
    subprocess.run(
        ["restic", "-r", repo.url, "--no-cache", "restore", "latest", "--target", str(tmp_path / "by-restic")],
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
        capture_output=True,
        check=True,
    )
    assert describe(restored_at(tmp_path / "by-restic", tree)) == expected


def test_restore_include(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)

    async def scenario() -> int:
        summary = await engine.backup(repo, [tree])
        result = await engine.restore(repo, summary.snapshot_id, tmp_path / "out", include=[str(tree / "a.txt")])
        return result.files_restored

    assert run(scenario()) == 1
    assert (restored_at(tmp_path / "out", tree) / "a.txt").read_bytes() == b"hello\n"
    assert not (restored_at(tmp_path / "out", tree) / "sub" / "b.bin").exists()


def test_stdin_backup_restores_exact_bytes(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    async def scenario() -> None:
        summary = await engine.backup_stdin(repo, ["printf", "a\\nb\\000c\\377"], "dump.sql", host="db-0")
        (snap,) = await engine.snapshots(repo)
        assert snap.hostname == "db-0"
        assert snap.paths == ("/dump.sql",)
        await engine.restore(repo, summary.snapshot_id, tmp_path / "out")

    run(scenario())
    assert (tmp_path / "out" / "dump.sql").read_bytes() == b"a\nb\x00c\xff"


def test_failing_stdin_command_saves_no_snapshot(engine: Engine, repo: RepositoryTarget) -> None:
    async def scenario() -> None:
        with pytest.raises(EngineError) as info:
            await engine.backup_stdin(repo, ["sh", "-c", "echo partial; echo dump broke >&2; exit 4"], "dump.sql")
        assert info.value.reason == "Failed"
        assert "exited with code 4" in info.value.message
        assert "dump broke" in info.value.message
        assert await engine.snapshots(repo) == []
        with pytest.raises(EngineError) as missing:
            await engine.backup_stdin(repo, ["/nonexistent/mysqldump"], "dump.sql")
        assert missing.value.reason == "Failed"

    run(scenario())


def test_wrong_password(engine: Engine, repo: RepositoryTarget) -> None:
    wrong = "not-the-password-9876"
    bad = RepositoryTarget(url=repo.url, password=wrong, secrets=(wrong,))
    with pytest.raises(EngineError) as info:
        run(engine.snapshots(bad))
    assert info.value.reason == "WrongPassword"
    assert wrong not in info.value.message and PASSWORD not in info.value.message
    with pytest.raises(EngineError) as again:
        run(engine.init(bad))
    assert again.value.reason == "WrongPassword"


def test_missing_repository_and_snapshot(
    engine: Engine, repo: RepositoryTarget, new_repo: RepositoryTarget, tmp_path: Path
) -> None:
    with pytest.raises(EngineError) as info:
        run(engine.snapshots(new_repo))
    assert info.value.reason == "RepositoryNotFound"
    assert run(engine.init(repo)) is False
    with pytest.raises(EngineError) as snap:
        run(engine.restore(repo, "deadbeef", tmp_path / "out"))
    assert snap.value.reason == "SnapshotNotFound"


def test_missing_path(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    with pytest.raises(EngineError) as info:
        run(engine.backup(repo, [tmp_path, missing]))
    assert info.value.reason == "PathNotFound"
    assert str(missing) in info.value.message


def test_unreadable_file_fails_the_backup(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    # /proc/PID/mem cannot be read from offset 0 (EIO) even by root: restic exits with 3.
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(EngineError) as info:
            run(engine.backup(repo, [Path(f"/proc/{sleeper.pid}/mem"), make_tree(tmp_path)]))
    finally:
        sleeper.kill()
        sleeper.wait()
    assert info.value.reason == "Failed"
    assert "could not be read" in info.value.message
    assert f"/proc/{sleeper.pid}/mem" in info.value.message


def test_timeout_stops_restic_and_repository_stays_sound(
    engine: Engine, repo: RepositoryTarget, tmp_path: Path
) -> None:
    command = ["sh", "-c", "head -c 3000000 /dev/urandom; exec sleep 31.4159"]

    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(EngineError) as info:
            await engine.backup_stdin(repo, command, "dump.bin", timeout=2)
        assert info.value.reason == "Timeout"
        assert time.monotonic() - started < 2 + 3 + 2
        assert restic_processes(repo.url) == []
        assert restic_processes("sleep 31.4159") == []
        check = await engine.check(repo)
        assert check.ok, check.message
        assert await engine.snapshots(repo) == []
        summary = await engine.backup(repo, [make_tree(tmp_path)])
        assert summary.snapshot_id

    run(scenario())


def test_cancellation_stops_restic(engine: Engine, repo: RepositoryTarget) -> None:
    async def scenario() -> None:
        task = asyncio.create_task(engine.backup_stdin(repo, ["sleep", "27.1828"], "dump.bin"))
        deadline = time.monotonic() + 10
        while not restic_processes("sleep 27.1828") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert restic_processes(repo.url) == []
        assert restic_processes("sleep 27.1828") == []
        assert (await engine.check(repo)).ok

    run(scenario())


def test_forget_and_prune(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    tree = make_tree(tmp_path)

    async def scenario() -> None:
        first = await engine.backup(repo, [tree])
        (tree / "new.bin").write_bytes(os.urandom(200_000))
        second = await engine.backup(repo, [tree])
        before = await engine.stats(repo)
        await engine.forget(repo, [second.snapshot_id])
        ids = [s.id for s in await engine.snapshots(repo)]
        assert len(ids) == 1 and ids[0].startswith(first.snapshot_id)
        assert await engine.stats(repo) < before  # pruned
        await engine.forget(repo, [])
        assert (await engine.check(repo)).ok

    run(scenario())


def test_keys(engine: Engine, repo: RepositoryTarget) -> None:
    second = "second-password-abcdef"

    async def scenario() -> None:
        await engine.add_key(repo, second, user="alice", host="backup-host")
        keys = await engine.keys(repo)
        assert len(keys) == 2
        added = next(k for k in keys if not k.current)
        assert all(len(k.id) == 8 for k in keys), keys  # restic's short ids, as `key list` shows them
        assert (added.user, added.host) == ("alice", "backup-host")
        assert added.created is not None and added.created.tzinfo is not None
        other = RepositoryTarget(url=repo.url, password=second, secrets=(second,))
        assert await engine.snapshots(other) == []
        with pytest.raises(EngineError) as info:
            await engine.add_key(repo, " padded ")
        assert " padded " not in info.value.message
        await engine.remove_key(repo, added.id)
        assert [k.current for k in await engine.keys(repo)] == [True]
        with pytest.raises(EngineError) as gone:
            await engine.snapshots(other)
        assert gone.value.reason == "WrongPassword"

    run(scenario())


def leave_stale_lock(repo: RepositoryTarget) -> Path:
    """A restic backup SIGKILLed mid-run leaves its lock behind (a dead PID on this host: stale)."""
    proc = subprocess.Popen(
        ["restic", "-r", repo.url, "--no-cache", "backup", "--stdin", "--stdin-filename", "x"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "RESTIC_PASSWORD": PASSWORD},
    )
    locks = Path(repo.url) / "locks"
    deadline = time.monotonic() + 10
    while not any(locks.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stdin is not None
    proc.stdin.close()
    assert any(locks.iterdir())
    return locks


def test_stale_lock_is_unlocked(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    locks = leave_stale_lock(repo)

    if is_native(engine):  # a dead process's lock on this host is stale: the native engine removes it itself
        assert run(engine.check(repo)).ok
    else:
        with pytest.raises(EngineError) as info:
            run(engine.check(repo))
        assert info.value.reason == "Locked"
    run(engine.unlock(repo))
    assert not any(locks.iterdir())
    assert run(engine.check(repo)).ok


def test_forget_removes_a_stale_lock_and_retries(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    summary = run(engine.backup(repo, [make_tree(tmp_path)]))
    leave_stale_lock(repo)
    run(engine.forget(repo, [summary.snapshot_id]))
    assert run(engine.snapshots(repo)) == []


def test_unlock_remove_all(engine: Engine, repo: RepositoryTarget) -> None:
    run(engine.unlock(repo, remove_all=True))


# ---------------------------------------------------------------- S3 (moto)


def test_s3_round_trip(engine: Engine, moto: MotoServer, tmp_path: Path) -> None:
    moto.create_bucket("engine-test")
    storage = Backend.model_validate(
        {"provider": "s3", "s3": {"endpoint": moto.endpoint, "bucket": "engine-test", "prefix": "cluster"}}
    )
    secret = {"AWS_ACCESS_KEY_ID": b"testing-key-id", "AWS_SECRET_ACCESS_KEY": b"testing-secret-key-123"}
    target = repository_target(
        storage,
        secret,
        {"RESTIC_PASSWORD": PASSWORD.encode()},
        f"demo/{type(engine).__name__}/repository/v1/backup/dump",
        scratch_dir=tmp_path / "scratch",
    )
    assert target.url.startswith(f"s3:{moto.endpoint}/engine-test/cluster/demo/")
    tree = make_tree(tmp_path)

    async def scenario() -> None:
        assert await engine.init(target) is True
        assert await engine.init(target) is False
        summary = await engine.backup(target, [tree], excludes=["*.tmp"])
        (snap,) = await engine.snapshots(target)
        assert snap.id.startswith(summary.snapshot_id)
        assert (await engine.check(target)).ok
        await engine.restore(target, snap.id, tmp_path / "out")

    run(scenario())
    assert (tmp_path / "scratch" / "restic-cache").is_dir() != is_native(engine)  # the native engine keeps no cache
    expected = describe(tree)
    del expected["scratch.tmp"]
    assert describe(restored_at(tmp_path / "out", tree)) == expected


def test_native_reuses_an_open_object_store_repository(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On S3 as on a local path, the operation after a backup (its check) reuses the repository the backup
    opened: no second open (no index file read again). A target with other credentials, same URL, is never
    served the one opened with the first's."""
    from kubestash.engine.native.repository import NativeRepository

    moto.create_bucket("reuse-test")
    storage = Backend.model_validate({"provider": "s3", "s3": {"endpoint": moto.endpoint, "bucket": "reuse-test"}})
    secret = {"AWS_ACCESS_KEY_ID": b"testing-key-id", "AWS_SECRET_ACCESS_KEY": b"testing-secret-key-123"}
    encryption = {"RESTIC_PASSWORD": PASSWORD.encode()}
    target = repository_target(storage, secret, encryption, "demo/reuse", scratch_dir=tmp_path / "a")
    rotated = {**secret, "AWS_SECRET_ACCESS_KEY": b"another-secret-key-456"}
    other = repository_target(storage, rotated, encryption, "demo/reuse", scratch_dir=tmp_path / "b")
    assert other.url == target.url
    opened: list[object] = []
    original = NativeRepository.open.__func__  # type: ignore[attr-defined]

    async def counting(cls: type[NativeRepository], *args: Any, **kwargs: Any) -> NativeRepository:
        opened.append(args[0])
        return await original(cls, *args, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(NativeRepository, "open", classmethod(counting))
    engine = NativeEngine()
    tree = make_tree(tmp_path / "src")

    async def scenario() -> None:
        await engine.init(target)
        summary = await engine.backup(target, [tree])
        before = len(opened)
        assert (await engine.check(target, snapshots=[summary.snapshot_id])).ok
        assert (await engine.snapshots(target))[0].id.startswith(summary.snapshot_id)
        assert len(opened) == before
        await engine.snapshots(other)
        assert len(opened) == before + 1

    run(scenario())


def test_s3_invalid_credentials_and_unreachable(engine: Engine) -> None:
    secret = "s3-secret-key-0123456789"
    env = {"AWS_ACCESS_KEY_ID": "AKIDUNKNOWN", "AWS_SECRET_ACCESS_KEY": secret}
    with moto_server(enforce_auth=True) as strict:
        target = RepositoryTarget(f"s3:{strict.endpoint}/bucket/x", PASSWORD, env, secrets=(PASSWORD, secret))
        with pytest.raises(EngineError) as info:
            run(engine.init(target))
    assert info.value.reason == "InvalidCredentials"
    assert secret not in info.value.message and PASSWORD not in info.value.message

    target = RepositoryTarget(f"s3:http://127.0.0.1:{closed_port()}/bucket/x", PASSWORD, env, secrets=(secret,))
    with pytest.raises(EngineError) as unreachable:
        run(engine.snapshots(target))
    assert unreachable.value.reason == "Unreachable"


def test_check_reports_a_damaged_repository(engine: Engine, repo: RepositoryTarget, tmp_path: Path) -> None:
    run(engine.backup(repo, [make_tree(tmp_path)]))
    # A damaged snapshot file fails without restic's backend retries (a missing pack would be retried for seconds).
    (snapshot,) = (Path(repo.url) / "snapshots").iterdir()
    snapshot.write_bytes(b"garbage" * 10)
    result = run(engine.check(repo))
    assert not result.ok
    assert ("snapshot " + snapshot.name if is_native(engine) else "invalid data returned") in result.message
    assert PASSWORD not in result.message


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        ("Fatal: wrong password or no key found\n", "WrongPassword"),
        (
            "Fatal: unable to open config file: Stat: The AWS Access Key Id you provided does not exist",
            "InvalidCredentials",
        ),
        (
            "Fatal: unable to open config file: Stat: Access Denied.\nIs there a repository at the following location?",
            "InvalidCredentials",
        ),
        ('Get "http://x/b/": dial tcp: lookup x on 10.0.0.1:53: no such host', "Unreachable"),
        ("unable to create lock in backend: repository is already locked by PID 7 on h by root", "Locked"),
        (
            "Fatal: unable to open config file: stat r/config: no such file or directory\nIs there a repository",
            "RepositoryNotFound",
        ),
        ('Fatal: invalid id "ab": no matching ID found for prefix "ab"', "SnapshotNotFound"),
        ("Fatal: something else broke\n", "Failed"),
    ],
)
def test_classify(stderr: str, reason: str) -> None:
    got, message = classify(stderr, 1)
    assert got == reason
    assert message and not message.startswith("Fatal")
