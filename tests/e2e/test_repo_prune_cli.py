"""``kubestash repo forget`` and ``repo prune`` as a user runs them, on repositories written by restic 0.14.

The JSON of ``forget`` and the plan ``prune`` prints must be restic's for the same repository, and whatever
the native commands leave behind must pass ``restic check --read-data`` and restore.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from restic_helpers import PASSWORD, cheapen_key, restored_at

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
ENV = {**os.environ, "RESTIC_PASSWORD": PASSWORD}


def restic(repo: Path, *args: str) -> str:
    result = subprocess.run(
        ["restic", "-r", str(repo), "--no-cache", *args], env=ENV, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def kubestash(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBESTASH), "repo", *args], env=ENV, capture_output=True, text=True, check=False, timeout=60
    )


def ok(*args: str) -> str:
    result = kubestash(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, source): three snapshots of a directory whose files change; two of /sub."""
    root = tmp_path_factory.mktemp("prune-cli")
    source = root / "data"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "kept.bin").write_bytes(os.urandom(200 * 1024))
    repo = root / "repo"
    restic(repo, "init")
    cheapen_key(repo, PASSWORD)
    for i in range(3):
        (source / f"file-{i}.bin").write_bytes(os.urandom(20 * 1024))
        if i:
            (source / f"file-{i - 1}.bin").unlink()
        restic(repo, "backup", "--quiet", str(source))
    for _ in range(2):
        restic(repo, "backup", "--quiet", str(source / "sub"))
    return repo, source


@pytest.fixture
def repo(original: tuple[Path, Path], tmp_path: Path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(original[0], copy)
    return copy


def by_paths(groups: list[dict[str, object]]) -> list[dict[str, object]]:
    """restic prints the groups in Go map order (random)."""
    return sorted(groups, key=lambda g: json.dumps(g["paths"]))


def test_forget_json_equals_restic(repo: Path) -> None:
    native = json.loads(ok("-r", str(repo), "--json", "forget", "--keep-last", "1", "--keep-daily", "2", "-n"))
    expected = json.loads(restic(repo, "--json", "forget", "--keep-last", "1", "--keep-daily", "2", "--dry-run"))
    assert by_paths(native) == by_paths(expected)
    assert len(native) == 2 and sum(len(g["remove"] or ()) for g in native) == 3
    assert len(json.loads(restic(repo, "--json", "snapshots"))) == 5  # a dry run removes nothing


def test_forget_with_prune_leaves_a_valid_repository(repo: Path, original: tuple[Path, Path], tmp_path: Path) -> None:
    source = original[1]
    before = sum(f.stat().st_size for f in (repo / "data").rglob("*") if f.is_file())
    out = ok("-r", str(repo), "forget", "--keep-last", "1", "--prune", "--max-unused", "0%")
    assert "Applying Policy: keep 1 latest snapshots" in out
    assert "remove 2 snapshots:" in out and "remove 1 snapshots:" in out
    assert "3 snapshots have been removed, running prune" in out
    assert "rebuilding index" in out and out.rstrip().endswith("done")
    assert "unused size after prune: 0 B (0.00% of remaining size)" in out
    assert sum(f.stat().st_size for f in (repo / "data").rglob("*") if f.is_file()) < before

    assert "no errors were found" in restic(repo, "check", "--read-data")
    assert len(json.loads(restic(repo, "--json", "snapshots"))) == 2
    restic(repo, "restore", "latest", "--path", str(source), "--target", str(tmp_path / "out"))
    assert files(restored_at(tmp_path / "out", source)) == files(source)


def plan_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("to repack:"))
    end = next(i for i, line in enumerate(lines) if line.startswith("unused size after prune:"))
    return lines[start : end + 1]


def test_prune_dry_run_prints_restics_plan(repo: Path) -> None:
    snapshots = json.loads(restic(repo, "--json", "snapshots"))
    restic(repo, "forget", snapshots[0]["id"], snapshots[1]["id"])
    before = sorted(str(p) for p in repo.rglob("*") if "locks" not in p.parts)
    native = ok("-r", str(repo), "prune", "--dry-run")
    assert plan_lines(native) == plan_lines(restic(repo, "prune", "--dry-run"))
    assert "rebuilding index" not in native
    assert sorted(str(p) for p in repo.rglob("*") if "locks" not in p.parts) == before
    via_restic = ok("-r", str(repo), "--engine", "restic", "prune", "--dry-run", "--max-unused", "unlimited")
    assert plan_lines(via_restic) == plan_lines(ok("-r", str(repo), "prune", "-n", "--max-unused", "unlimited"))


def test_forget_by_id_and_usage_errors(repo: Path) -> None:
    snapshots = json.loads(restic(repo, "--json", "snapshots"))
    short = snapshots[0]["short_id"]
    assert ok("-r", str(repo), "forget", short, "--dry-run").strip() == f"would have removed snapshot {short}"
    assert ok("-r", str(repo), "forget", short).strip() == f"removed snapshot {short}"
    assert len(json.loads(restic(repo, "--json", "snapshots"))) == 4
    assert "no policy was specified" in ok("-r", str(repo), "forget")

    unknown = kubestash("-r", str(repo), "forget", snapshots[1]["id"], "0000dead")
    assert unknown.returncode == 1 and unknown.stderr.strip() == "Error: no snapshot matched ID '0000dead'"
    assert len(json.loads(restic(repo, "--json", "snapshots"))) == 4  # nothing removed
    assert kubestash("-r", str(repo), "prune", "--max-unused", "5x").returncode == 2
    assert kubestash("-r", str(repo), "forget", short, "--keep-last", "1").returncode == 2
