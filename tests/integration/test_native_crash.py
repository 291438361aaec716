"""A native backup killed (SIGKILL) at random points leaves a repository restic 0.14 checks clean, and the
next backup reuses what the killed one uploaded.

Each run starts from an empty repository (a copy of one natively initialised with a cheap KDF), runs a
backup in a subprocess with small packs and frequent index writes (so kills land before, between and
after packs, index files and the snapshot) and kills it after a seeded random delay; the delays are spread
evenly over the time a whole backup takes. After every kill ``restic check`` must pass (exit 0; it may
print hints about packs no index names). After every fifth kill the next native backup runs to completion:
it must index the killed run's unindexed packs (:func:`recover_packs`), upload less than a full backup
whenever packs had been uploaded, and ``restic restore`` must reproduce the source byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubestash.engine.native.backup import backup, recover_packs
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.packer import DATA, PackWriter
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore
from restic_helpers import PASSWORD, describe, restored_at

RUNS = 20
VERIFY_EVERY = 5
SEED = 20240607
PACK_SIZE = 2 * 1024 * 1024
INDEX_EVERY = 12
FILES = 400
CHEAP = KdfParams(1024, 8, 1)
_ID = re.compile(r"[0-9a-f]{64}")

SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from kubestash.engine.native.backup import backup, recover_packs
from kubestash.engine.native.packer import DATA, PackWriter
from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore

async def main() -> None:
    repo = await NativeRepository.open(LocalStore(Path(sys.argv[1])), sys.argv[3])
    s = await backup(repo, [sys.argv[2]], pack_size=int(sys.argv[4]), index_every=int(sys.argv[5]))
    print(json.dumps({"data_added": s.data_added, "index_files": s.index_files}))

asyncio.run(main())
"""


def restic(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    env.pop("RESTIC_PASSWORD_FILE", None)
    return subprocess.run(
        ["restic", "--no-cache", *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )


def start(repo: Path, source: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", SCRIPT, str(repo), str(source), PASSWORD, str(PACK_SIZE), str(INDEX_EVERY)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def packs(repo: Path) -> set[str]:
    return {p.name for p in (repo / "data").glob("*/*") if _ID.fullmatch(p.name)}


def indexed_packs(repo: Path) -> set[str]:
    opened = asyncio.run(NativeRepository.open(LocalStore(repo), PASSWORD))
    return {entry.pack_id for entry in opened.index.values()}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~180 MB in 400 files (random, so it neither compresses nor dedups) and a few small ones."""
    root = tmp_path_factory.mktemp("crash") / "src"
    rng = random.Random(SEED)
    for i in range(FILES):
        folder = root / f"d{i // 40}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{i:03d}.bin").write_bytes(rng.randbytes(rng.randint(64 * 1024, 850 * 1024)))
    (root / "small.txt").write_text("hello\n")
    (root / "empty").mkdir()
    return root


def test_killed_backups(tmp_path: Path, source: Path) -> None:
    empty = tmp_path / "empty-repo"
    asyncio.run(init_repository(LocalStore(empty), PASSWORD, version=2, kdf=CHEAP))

    # A whole backup (twice: the first warms the caches): how long it takes (the kills spread over that) and
    # how much it uploads.
    durations = []
    for _ in range(2):
        full_repo = tmp_path / "full"
        shutil.copytree(empty, full_repo)
        began = time.monotonic()
        proc = start(full_repo, source)
        out, err = proc.communicate(timeout=120)
        durations.append(time.monotonic() - began)
        assert proc.returncode == 0, err
        full_added = int(re.search(r'"data_added": (\d+)', out).group(1))  # type: ignore[union-attr]
        index_files = int(re.search(r'"index_files": (\d+)', out).group(1))  # type: ignore[union-attr]
        assert len(packs(full_repo)) > 50 and index_files >= len(packs(full_repo)) // INDEX_EVERY  # periodic
        shutil.rmtree(full_repo)

    # Kill points: a seeded fraction of a whole run each, spread evenly over it (shuffled). The machine is
    # shared, so a run's length varies: the estimate follows the fastest run seen, and a run that finished
    # before its kill does not count (the attempt is repeated with the next fraction).
    estimate = min(durations)
    rng = random.Random(SEED)
    fractions = [(i + rng.random()) / RUNS for i in range(RUNS)]
    rng.shuffle(fractions)
    outcomes: list[str] = []
    kills = reused = attempt = 0
    while kills < RUNS:
        attempt += 1
        assert attempt <= 2 * RUNS, outcomes
        repo = tmp_path / f"run{attempt}"
        shutil.copytree(empty, repo)
        delay = estimate * (0.1 + 0.9 * fractions[kills])
        began = time.monotonic()
        proc = start(repo, source)
        try:
            proc.wait(timeout=delay)
            estimate = min(estimate, time.monotonic() - began)
            outcomes.append(f"{delay:.2f}s: finished first")
            shutil.rmtree(repo)
            continue
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        kills += 1
        uploaded = packs(repo)
        snapshots = list((repo / "snapshots").iterdir())
        outcomes.append(f"{delay:.2f}s: killed, {len(uploaded)} packs, {len(snapshots)} snapshots")

        checked = restic(repo, "check")
        assert checked.returncode == 0, (outcomes[-1], checked.stdout, checked.stderr)

        if kills % VERIFY_EVERY == 0:
            unindexed = uploaded - indexed_packs(repo)
            opened = asyncio.run(NativeRepository.open(LocalStore(repo), PASSWORD))
            summary = asyncio.run(backup(opened, [str(source)], pack_size=PACK_SIZE))
            assert summary.packs_recovered == len(unindexed), outcomes[-1]
            if uploaded:
                assert summary.data_added < full_added, outcomes[-1]
                reused += 1
            outcomes[-1] += (
                f"; next backup recovered {summary.packs_recovered} packs, uploaded"
                f" {summary.data_added / full_added:.0%} of a full one"
            )
            assert restic(repo, "check").returncode == 0
            target = tmp_path / f"restored{attempt}"
            restored = restic(repo, "restore", summary.snapshot_id, "--target", str(target))
            assert restored.returncode == 0, restored.stderr
            assert describe(restored_at(target, source)) == describe(source)
            shutil.rmtree(target)
        shutil.rmtree(repo)
    print(f"whole backup {min(durations):.2f}s", *outcomes, sep="\n")
    assert reused >= 1, outcomes  # at least one verified kill came after packs had been uploaded


class _NoSizes:
    """A store whose listing tells no sizes (recovery then reads unindexed packs whole)."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.description = inner.description
        self.list, self.get, self.get_range = inner.list, inner.get, inner.get_range
        self.put, self.delete, self.exists = inner.put, inner.delete, inner.exists


@pytest.mark.parametrize("sizes", [True, False])
def test_recovery_indexes_valid_packs_and_skips_damaged_ones(tmp_path: Path, sizes: bool) -> None:
    path = tmp_path / "repo"
    repo = asyncio.run(init_repository(LocalStore(path), PASSWORD, version=2, kdf=CHEAP))
    writer = PackWriter(repo.key, 2)
    blobs = [os.urandom(100_000) for _ in range(3)]
    for blob in blobs[:2]:
        writer.add(DATA, blob)
    good = writer.finish()
    writer.add(DATA, blobs[2])
    other = writer.finish()
    for pack in (good, other):
        (path / pack.path).parent.mkdir(parents=True, exist_ok=True)
        (path / pack.path).write_bytes(pack.data)
    truncated = path / "data" / other.id[:2] / other.id
    truncated.write_bytes(other.data[: len(other.data) // 2])  # what a non-atomic writer could leave
    garbage = "ab" * 32
    (path / "data" / "ab").mkdir(exist_ok=True)
    (path / "data" / "ab" / garbage).write_bytes(os.urandom(5000))
    (path / "data" / "ab" / ".tmp-x1y2").write_bytes(b"partial")  # a killed put: not a pack name

    store = LocalStore(path) if sizes else _NoSizes(LocalStore(path))
    opened = asyncio.run(NativeRepository.open(store, PASSWORD))  # type: ignore[arg-type]
    recovery = asyncio.run(recover_packs(opened))
    assert (recovery.packs, recovery.blobs, recovery.index_files) == (1, 2, 1)
    assert [s.split(":")[0] for s in recovery.skipped] == sorted([f"pack {garbage}", f"pack {other.id}"])
    assert asyncio.run(recover_packs(opened)).packs == 0  # indexed now: nothing to do
    reopened = asyncio.run(NativeRepository.open(LocalStore(path), PASSWORD))
    assert {reopened.index[hashlib.sha256(b).hexdigest()].pack_id for b in blobs[:2]} == {good.id}
    checked = restic(path, "check", "--read-data")  # reads every indexed pack: the recovered index is right
    assert checked.returncode == 0, checked.stdout + checked.stderr
