"""Native ``forget`` and ``prune`` against restic 0.14 as the oracle (no mocks).

Every pruned repository must pass ``restic check --read-data``, every remaining snapshot must restore byte for
byte with ``restic restore``, and restic must be able to back up into it again. The prune plan (what is
repacked, deleted and left unused) must be the one ``restic prune --dry-run`` prints for the same repository,
for ``--max-unused`` 0, 5 % and unlimited. The scenario: three snapshots of one directory; snapshot 1 holds a
small file that disappears later (its pack becomes mixed: used and unused blobs), snapshot 2 a larger file
that disappears too (its pack becomes fully unused); an unchanged subdirectory keeps snapshot 1's tree pack
mixed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from kubestash.api.storage import RetentionPolicySpec, SuccessfulSnapshotsKeepPolicy
from kubestash.engine.native.backup import backup
from kubestash.engine.native.files import load_json
from kubestash.engine.native.index import IndexEntry
from kubestash.engine.native.init import KdfParams, init_repository
from kubestash.engine.native.prune import (
    UNLIMITED,
    PruneError,
    PruneReport,
    forget,
    forget_by_policy,
    prune,
    summary_lines,
)
from kubestash.engine.native.repository import NativeRepository, SnapshotNotFoundError, index_entries
from kubestash.engine.native.store import LocalStore, path_of
from restic_helpers import PASSWORD, cheapen_key, restic_output, restored_at

T = TypeVar("T")
CHEAP = KdfParams(1024, 8, 1)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


restic = restic_output


def open_repo(path: Path) -> NativeRepository:
    return run(NativeRepository.open(LocalStore(path), PASSWORD))


def assert_restic_check(repo: Path) -> None:
    out = restic(repo, "check", "--read-data")
    assert "no errors were found" in out
    assert "not referenced in index" not in out


def data_size(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / "data").rglob("*") if f.is_file())


def listing(repo: Path) -> dict[str, tuple[int, int]]:
    return {
        str(f.relative_to(repo)): (f.stat().st_size, f.stat().st_mtime_ns)
        for f in repo.rglob("*")
        if f.is_file() and "locks" not in f.parts
    }


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class Scenario:
    repo: Path
    source: Path
    snapshots: list[str]
    """Snapshot ids, oldest first."""
    states: list[dict[str, bytes]]
    """The source's files at each snapshot."""
    gone: list[str]
    """Blob ids only the first two snapshots use (both files are below the chunker's minimum size)."""
    kept: list[str]


def build(root: Path, kind: str) -> Scenario:
    """Three snapshots (see the module docstring), written by restic or by the native backup."""
    engine, version = kind.split("-v")
    source = root / "data"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "keep-small.txt").write_bytes(os.urandom(4 * 1024))
    (source / "keep.bin").write_bytes(os.urandom(300 * 1024))
    (source / "gone-small.txt").write_bytes(os.urandom(5 * 1024))
    repo = root / "repo"
    if engine == "restic":
        restic(repo, "init", "--repository-version", version)
        cheapen_key(repo, PASSWORD)
    else:
        run(init_repository(LocalStore(repo), PASSWORD, version=int(version), kdf=CHEAP))

    def snap() -> str:
        if engine == "restic":
            lines = restic(repo, "backup", "--json", str(source)).splitlines()
            return str(json.loads(lines[-1])["snapshot_id"])
        native = open_repo(repo)
        return run(backup(native, [str(source)], pack_size=64 * 1024, workers=1)).snapshot_id

    gone = [hashlib.sha256((source / "gone-small.txt").read_bytes()).hexdigest()]
    kept = [hashlib.sha256((source / n).read_bytes()).hexdigest() for n in ("keep.bin", "sub/keep-small.txt")]
    states, short = [contents(source)], [snap()]
    (source / "gone-small.txt").unlink()
    (source / "gone-big.bin").write_bytes(os.urandom(200 * 1024))
    gone.append(hashlib.sha256((source / "gone-big.bin").read_bytes()).hexdigest())
    states.append(contents(source))
    short.append(snap())
    (source / "gone-big.bin").unlink()
    (source / "new.bin").write_bytes(os.urandom(50 * 1024))
    states.append(contents(source))
    short.append(snap())
    ids = [s.id for s in run(open_repo(repo).snapshots())]
    assert [i[: len(s)] for i, s in zip(ids, short, strict=True)] == short
    return Scenario(repo, source, ids, states, gone, kept)


@pytest.fixture(scope="module")
def restic_v2(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return build(tmp_path_factory.mktemp("restic-v2"), "restic-v2")


def copy_of(scenario: Scenario, tmp_path: Path) -> Scenario:
    target = tmp_path / "repo"
    shutil.copytree(scenario.repo, target)
    for f in target.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    return Scenario(target, scenario.source, scenario.snapshots, scenario.states, scenario.gone, scenario.kept)


def restic_restores(scenario: Scenario, snapshot: str, state: dict[str, bytes], target: Path) -> None:
    restic(scenario.repo, "restore", snapshot, "--target", str(target))
    assert contents(restored_at(target, scenario.source)) == state


@pytest.mark.parametrize("kind", ["native-v2", "restic-v2", "restic-v1"])
def test_forget_and_prune(tmp_path: Path, kind: str) -> None:
    scenario = build(tmp_path, kind)
    repo = open_repo(scenario.repo)
    before = data_size(scenario.repo)
    assert run(forget(repo, [scenario.snapshots[0][:8], scenario.snapshots[1]])) == scenario.snapshots[:2]
    report = run(prune(repo, max_unused=0))

    assert_restic_check(scenario.repo)
    restic_restores(scenario, scenario.snapshots[2], scenario.states[2], tmp_path / "restored")
    assert data_size(scenario.repo) < before
    assert report.bytes_after == data_size(scenario.repo)
    assert report.bytes_freed == before - data_size(scenario.repo)
    assert report.packs_deleted >= 1 and report.packs_repacked >= 1 and report.unused_after == 0
    reopened = open_repo(scenario.repo)
    assert not set(scenario.gone) & set(reopened.index)
    assert set(scenario.kept) <= set(reopened.index)
    assert run(prune(reopened, max_unused=0)).nothing_to_do

    # restic backs up into the pruned repository and finds the remaining data (only the new file is stored).
    (scenario.source / "later.txt").write_bytes(os.urandom(1000))
    summary = json.loads(restic(scenario.repo, "backup", "--force", "--json", str(scenario.source)).splitlines()[-1])
    assert summary["data_blobs"] == 1
    assert_restic_check(scenario.repo)


def restic_plan(repo: Path, max_unused: str, pack_mib: int) -> list[str]:
    out = restic(repo, "prune", "--dry-run", "--max-unused", max_unused, "--pack-size", str(pack_mib)).splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("to repack:"))
    end = next(i for i, line in enumerate(out) if line.startswith("unused size after prune:"))
    return out[start : end + 1]


@pytest.mark.parametrize(
    ("flag", "fraction", "pack_mib"),
    [("0", 0.0, 4), ("5%", 0.05, 4), ("unlimited", UNLIMITED, 4), ("5%", 0.05, 16)],
    ids=["0", "5%", "unlimited", "5%-small-packs"],
)
def test_prune_plan_matches_restic(
    tmp_path: Path, restic_v2: Scenario, flag: str, fraction: float, pack_mib: int
) -> None:
    """The plan equals restic's. A pack below 1/25 of the target pack size is repacked whatever the limit
    (the 300 KiB mixed data pack is small for 16 MiB packs, not for 4 MiB ones), tree packs always."""
    scenario = copy_of(restic_v2, tmp_path)
    restic(scenario.repo, "forget", *scenario.snapshots[:2])
    repo = open_repo(scenario.repo)
    pack_size = pack_mib * 1024 * 1024
    planned = run(prune(repo, max_unused=fraction, dry_run=True, pack_size=pack_size))
    assert "\n".join(summary_lines(planned)[:6]) == "\n".join(restic_plan(scenario.repo, flag, pack_mib))

    keep_pack = repo.index[scenario.kept[0]].pack_id  # keep.bin and the gone small file: a mixed data pack
    gone_pack = repo.index[scenario.gone[1]].pack_id  # only the gone big file: fully unused
    report = run(prune(repo, max_unused=fraction, pack_size=pack_size))
    assert summary_lines(report) == summary_lines(planned)
    assert_restic_check(scenario.repo)
    restic_restores(scenario, scenario.snapshots[2], scenario.states[2], tmp_path / "restored")
    left = set(run(repo.store.list("data")))
    assert gone_pack not in left
    assert report.packs_repacked >= 1  # snapshot 1's tree pack (mixed) is repacked whatever the limit
    if fraction == 0 or pack_mib == 16:
        assert report.unused_after == 0 and keep_pack not in left
    else:  # the small unused file is tolerated: below 5 % of what remains, or without limit
        assert 0 < report.unused_after <= 0.05 * report.remaining_size and keep_pack in left


def test_dry_run_changes_nothing(tmp_path: Path, restic_v2: Scenario) -> None:
    scenario = copy_of(restic_v2, tmp_path)
    repo = open_repo(scenario.repo)
    run(forget(repo, scenario.snapshots[:2]))
    before = listing(scenario.repo)
    report = run(prune(repo, max_unused=0, dry_run=True))
    assert report.dry_run and report.packs_repacked and report.packs_deleted
    assert listing(scenario.repo) == before
    kept, removed = run(forget_by_policy(repo, keep_last(1), now=datetime.now(UTC), dry_run=True))
    assert ([s.id for s in kept], removed) == ([scenario.snapshots[2]], [])
    assert listing(scenario.repo) == before


def keep_last(n: int) -> RetentionPolicySpec:
    return RetentionPolicySpec(successful_snapshots=SuccessfulSnapshotsKeepPolicy(last=n))


def test_forget_by_policy_matches_restic(tmp_path: Path, restic_v2: Scenario) -> None:
    """restic's default grouping (host and paths): a second group of snapshots keeps its own last two."""
    scenario = copy_of(restic_v2, tmp_path)
    for _ in range(3):
        restic(scenario.repo, "backup", "--quiet", str(scenario.source / "sub"))
    groups = json.loads(restic(scenario.repo, "forget", "--keep-last", "2", "--dry-run", "--json"))
    expected_keep = {s["id"] for g in groups for s in g["keep"]}
    expected_remove = {s["id"] for g in groups for s in g["remove"]}
    assert len(groups) == 2 and len(expected_remove) == 2

    repo = open_repo(scenario.repo)
    kept, removed = run(forget_by_policy(repo, keep_last(2), now=datetime.now(UTC)))
    assert ({s.id for s in kept}, {s.id for s in removed}) == (expected_keep, expected_remove)
    assert {s.id for s in run(repo.snapshots())} == expected_keep
    # --host filters: no snapshot of another host is touched.
    assert run(forget_by_policy(repo, keep_last(1), now=datetime.now(UTC), host="elsewhere")) == ([], [])
    run(prune(repo))
    assert_restic_check(scenario.repo)


def test_forget_unknown_id_removes_nothing(tmp_path: Path, restic_v2: Scenario) -> None:
    scenario = copy_of(restic_v2, tmp_path)
    repo = open_repo(scenario.repo)
    with pytest.raises(SnapshotNotFoundError, match="deadbeef"):
        run(forget(repo, [scenario.snapshots[0], "deadbeef"]))
    assert len(run(repo.snapshots())) == 3


class FailingDeletes(LocalStore):
    """A local store whose deletes fail: a prune "crashing" once its new packs and index are written."""

    async def delete(self, path: str) -> None:
        raise OSError(f"simulated crash before deleting {path}")


def test_interrupted_prune_leaves_a_valid_repository(tmp_path: Path, restic_v2: Scenario) -> None:
    scenario = copy_of(restic_v2, tmp_path)
    repo = open_repo(scenario.repo)
    run(forget(repo, scenario.snapshots[:2]))
    old_index = set(run(repo.store.list("index")))
    crashing = run(NativeRepository.open(FailingDeletes(scenario.repo), PASSWORD))
    with pytest.raises(OSError, match="simulated crash"):
        run(prune(crashing, max_unused=0))
    assert old_index < set(run(repo.store.list("index")))  # the new index was written, the old one not deleted
    assert_restic_check(scenario.repo)
    restic_restores(scenario, scenario.snapshots[2], scenario.states[2], tmp_path / "after-crash")

    report = run(prune(open_repo(scenario.repo), max_unused=0))
    assert report.duplicate_blobs > 0  # the repacked blobs, in their old and their new packs
    assert report.packs_deleted >= 2 and report.unused_after == 0
    assert not old_index & set(run(repo.store.list("index")))
    assert_restic_check(scenario.repo)
    restic_restores(scenario, scenario.snapshots[2], scenario.states[2], tmp_path / "after-resume")
    assert run(prune(open_repo(scenario.repo), max_unused=0)).nothing_to_do


def test_prune_refuses_when_used_data_is_not_indexed(tmp_path: Path, restic_v2: Scenario) -> None:
    scenario = copy_of(restic_v2, tmp_path)
    repo = open_repo(scenario.repo)
    new_pack = repo.index[hashlib.sha256(scenario.states[2]["new.bin"]).hexdigest()].pack_id
    for name in run(repo.store.list("index")):  # drop the index file that lists the last backup's packs
        if any(e.pack_id == new_pack for e in run(index_of(repo, name))):
            (scenario.repo / path_of("index", name)).unlink()
    before = listing(scenario.repo)
    with pytest.raises(PruneError, match="not in the index"):
        run(prune(open_repo(scenario.repo)))
    assert listing(scenario.repo) == before


async def index_of(repo: NativeRepository, name: str) -> list[IndexEntry]:
    return list(index_entries(load_json(repo.key, await repo.store.get(path_of("index", name)))))


def test_report_summary_wording() -> None:
    report = PruneReport(dry_run=True, used_blobs=6, used_size=250860, unused_blobs=4, unused_size=1212)
    report.delete_blobs, report.delete_size, report.packs_deleted = 4, 1212, 2
    assert summary_lines(report) == [
        "to repack:             0 blobs / 0 B",
        "this removes:          0 blobs / 0 B",
        "to delete:             4 blobs / 1.184 KiB",
        "total prune:           4 blobs / 1.184 KiB",
        "remaining:             6 blobs / 244.980 KiB",
        "unused size after prune: 0 B (0.00% of remaining size)",
    ]


def test_prune_plans_the_same_with_the_index_on_disk(
    tmp_path: Path, restic_v2: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan from the on-disk index (blob handles in temporary SQLite files, each pack's blobs read again
    when needed) equals the plan from memory: one that repacks, and one with duplicates; then the prune
    itself, on disk."""
    monkeypatch.setenv("KUBESTASH_CACHE_DIR", str(tmp_path / "cache"))
    scenario = copy_of(restic_v2, tmp_path)
    run(forget(open_repo(scenario.repo), scenario.snapshots[:2]))

    def plans() -> dict[str, PruneReport]:
        reports = {}
        for mode in ("memory", "disk"):
            monkeypatch.setenv("KUBESTASH_INDEX", mode)
            reports[mode] = run(prune(open_repo(scenario.repo), max_unused=0, dry_run=True))
        assert reports["disk"] == reports["memory"]
        return reports

    assert plans()["disk"].packs_repacked > 0
    with pytest.raises(OSError, match="simulated crash"):  # leaves every repacked blob in two packs
        run(prune(run(NativeRepository.open(FailingDeletes(scenario.repo), PASSWORD)), max_unused=0))
    planned = plans()["disk"]
    assert planned.duplicate_blobs > 0
    report = run(prune(open_repo(scenario.repo), max_unused=0))
    assert (report.packs_deleted, report.unused_after) == (planned.packs_deleted, 0)
    assert_restic_check(scenario.repo)
    restic_restores(scenario, scenario.snapshots[2], scenario.states[2], tmp_path / "restored")
