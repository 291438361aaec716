"""``kubestash repo`` as a user runs it: the installed command on repositories written by restic 0.14.

Every listing is compared with what restic itself prints for the same repository (the command promises
restic's JSON shapes), a restore must reproduce the backed-up tree, a damaged repository must fail ``check``,
and failures must be one line without the password.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kubestash.engine.native.repository import NativeRepository
from kubestash.engine.native.store import LocalStore, path_of
from restic_helpers import PASSWORD, cheapen_key, describe, make_tree, restored_at
from storage_servers import moto_server

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
ENV = {**os.environ, "RESTIC_PASSWORD": PASSWORD}


def restic(repo: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        ["restic", "-r", repo, "--no-cache", "--quiet", *args],
        env={**ENV, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def kubestash(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBESTASH), "repo", *args], env=env or ENV, capture_output=True, text=True, check=False, timeout=60
    )


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = kubestash(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def repo(source: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("repo") / "repo"
    restic(str(path), "init")
    cheapen_key(path, PASSWORD)
    restic(str(path), "backup", str(source / "sub"), "--tag", "first")
    restic(str(path), "backup", str(source))
    return str(path)


def test_snapshots_json_equals_restic(repo: str) -> None:
    native = json.loads(ok("-r", repo, "--json", "snapshots"))
    expected = json.loads(restic(repo, "snapshots", "--json"))
    assert [(s["id"], s["short_id"], s["paths"], s["tree"]) for s in native] == [
        (s["id"], s["short_id"], s["paths"], s["tree"]) for s in expected
    ]
    assert native == expected
    table = ok("-r", repo, "snapshots")
    assert all(s["short_id"] in table for s in expected)
    assert "2 snapshots" in table


def test_engine_restic_runs_restic(repo: str) -> None:
    via_restic = json.loads(ok("-r", repo, "--engine", "restic", "--json", "snapshots"))
    assert via_restic == json.loads(ok("-r", repo, "--json", "snapshots"))


def test_ls_lists_what_restic_lists(repo: str, source: Path) -> None:
    # restic --quiet leaves out the "snapshot ... of ..." header line.
    assert ok("-r", repo, "ls", "latest").splitlines()[1:] == restic(repo, "ls", "latest").splitlines()
    native = [json.loads(line) for line in ok("-r", repo, "--json", "ls", "latest").splitlines()]
    expected = [json.loads(line) for line in restic(repo, "ls", "--json", "latest").splitlines()]
    assert native == expected
    assert native[0]["struct_type"] == "snapshot"
    sub = str(source / "sub")
    assert ok("-r", repo, "ls", "latest", sub).splitlines()[1:] == restic(repo, "ls", "latest", sub).splitlines()


def test_restore_reproduces_the_tree(repo: str, source: Path, tmp_path: Path) -> None:
    out = ok("-r", repo, "restore", "latest", "--target", str(tmp_path / "out"))
    assert "restored 5 files" in out
    assert describe(restored_at(tmp_path / "out", source)) == describe(source)


def test_restore_include(repo: str, source: Path, tmp_path: Path) -> None:
    ok("-r", repo, "restore", "latest", "--target", str(tmp_path / "out"), "--include", "*.sh")
    restored = restored_at(tmp_path / "out", source)
    assert (restored / "sub" / "deeper" / "c.sh").read_text() == "#!/bin/sh\necho hi\n"
    assert not (restored / "a.txt").exists()


@pytest.mark.parametrize("snapshot", [[], ["latest"]], ids=["all", "latest"])
def test_stats_equals_restic(repo: str, snapshot: list[str]) -> None:
    native = json.loads(ok("-r", repo, "--json", "stats", *snapshot))
    expected = json.loads(restic(repo, "stats", "--json", "--mode", "restore-size", *snapshot))
    assert (native["total_size"], native["total_file_count"]) == (expected["total_size"], expected["total_file_count"])
    assert native == expected
    assert "Total File Count:" in ok("-r", repo, "stats")


def test_check_passes_and_fails_on_damage(repo: str, tmp_path: Path) -> None:
    assert "no errors were found" in ok("-r", repo, "check", "--read-data")
    summary = json.loads(ok("-r", repo, "--json", "check"))
    assert summary["num_errors"] == 0 and summary["snapshots"] == 2

    copy = tmp_path / "damaged"
    shutil.copytree(repo, copy)
    opened = asyncio.run(NativeRepository.open(LocalStore(copy), PASSWORD))
    pack_id = next(e.pack_id for e in opened.index.values() if e.blob.type == "data")
    (copy / path_of("data", pack_id)).unlink()
    result = kubestash("-r", str(copy), "check")
    assert result.returncode == 1
    assert f"pack {pack_id}: does not exist" in result.stdout
    assert result.stderr.strip() == "Error: repository contains errors (1)"


def test_wrong_password_is_one_line_without_the_password(repo: str, tmp_path: Path) -> None:
    wrong = "Not-The-Password-7c1d"
    result = kubestash("-r", repo, "snapshots", env={**os.environ, "RESTIC_PASSWORD": wrong})
    assert result.returncode == 1
    assert "wrong password" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert wrong not in result.stdout + result.stderr and "Traceback" not in result.stderr

    (tmp_path / "pw").write_text(wrong + "\n")
    env = {k: v for k, v in os.environ.items() if k != "RESTIC_PASSWORD"}
    result = kubestash("-r", repo, "--password-file", str(tmp_path / "pw"), "snapshots", env=env)
    assert result.returncode == 1 and "wrong password" in result.stderr and wrong not in result.stderr
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    assert "2 snapshots" in ok("-r", repo, "--password-file", str(tmp_path / "pw"), "snapshots", env=env)


def test_usage_and_unsupported_errors(repo: str) -> None:
    assert kubestash("-r", repo, "--engine", "bogus", "snapshots").returncode == 2
    assert kubestash("snapshots").returncode == 2
    result = kubestash("-r", "rest:http://host:8000/", "snapshots")
    assert result.returncode == 1 and "not supported by the native engine" in result.stderr
    missing = kubestash("-r", repo, "ls", "deadbeef")
    assert missing.returncode == 1 and "no snapshot matched" in missing.stderr


def test_snapshots_of_an_s3_repository(tmp_path: Path) -> None:
    tree = make_tree(tmp_path)
    secret = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key-123"}
    with moto_server() as moto:
        moto.create_bucket("cli")
        url = f"s3:{moto.endpoint}/cli/some/repo"
        restic(url, "init", env=secret)
        restic(url, "backup", str(tree), env=secret)
        expected = json.loads(restic(url, "snapshots", "--json", env=secret))
        native = json.loads(ok("-r", url, "--json", "snapshots", env={**ENV, **secret}))
        assert [s["id"] for s in native] == [s["id"] for s in expected]
        assert native == expected
        listed = ok("-r", url, "ls", "latest", env={**ENV, **secret}).splitlines()[1:]
        assert listed == restic(url, "ls", "latest", env=secret).splitlines()


# ------------------------------------------------------------------ writing: init and backup


@pytest.fixture(scope="module")
def native_repo(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("native") / "repo"
    out = ok("-r", str(path), "init")
    assert out.startswith("created restic repository ") and f" at {path}\n" in out
    return str(path)


def test_init_creates_a_repository_restic_opens(native_repo: str) -> None:
    assert json.loads(restic(native_repo, "snapshots", "--json")) == []
    again = kubestash("-r", native_repo, "init")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1


def test_backup_is_what_restic_reads_back(native_repo: str, source: Path, tmp_path: Path) -> None:
    first = json.loads(ok("-r", native_repo, "--json", "backup", str(source), "--exclude", "*.tmp", "--tag", "t1"))
    assert first["message_type"] == "summary" and first["files_new"] == first["total_files_processed"] > 0
    assert first["data_added"] > 0 and len(first["snapshot_id"]) == 8
    restic(native_repo, "check", "--read-data")
    restic(native_repo, "restore", "latest", "--target", str(tmp_path / "out"))
    expected = {k: v for k, v in describe(source).items() if k != "scratch.tmp"}
    assert describe(restored_at(tmp_path / "out", source)) == expected
    (snapshot,) = json.loads(restic(native_repo, "snapshots", "--json"))
    assert snapshot["short_id"] == first["snapshot_id"] and snapshot["tags"] == ["t1"]

    # The unchanged tree again: no file read or added. (data_added counts tree blobs too, as restic's does: an
    # ancestor such as /tmp may have changed meanwhile, and its new tree blob is then all that is added.)
    second = json.loads(ok("-r", native_repo, "--json", "backup", str(source), "--exclude", "*.tmp"))
    assert (second["files_new"], second["files_changed"]) == (0, 0)
    assert second["files_unmodified"] == first["files_new"]
    assert second["data_blobs"] == 0
    assert second["data_added"] == 0 or (second["tree_blobs"] > 0 and second["data_added"] < 4096)

    text = ok("-r", native_repo, "backup", str(source), "--exclude", "*.tmp", "--parent", first["snapshot_id"])
    assert f"using parent snapshot {first['snapshot_id']}" in text
    assert f"Files:           0 new,     0 changed,     {first['files_new']} unmodified" in text
    assert "processed " in text and text.rstrip().splitlines()[-1].endswith(" saved")

    # restic itself, through --engine restic, takes the native snapshot as its parent.
    args = ("-r", native_repo, "--engine", "restic", "--json", "backup", str(source), "--exclude", "*.tmp")
    via_restic = kubestash(*args)
    assert via_restic.returncode == 0, via_restic.stderr
    summary = json.loads(via_restic.stdout.strip().splitlines()[-1])
    assert summary["files_unmodified"] == first["files_new"]


def test_backup_wrong_password_is_one_line(native_repo: str, source: Path) -> None:
    wrong = "Not-The-Password-91ab"
    result = kubestash("-r", native_repo, "backup", str(source), env={**os.environ, "RESTIC_PASSWORD": wrong})
    assert result.returncode == 1 and "wrong password" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert wrong not in result.stdout + result.stderr and "Traceback" not in result.stderr
    missing = kubestash("-r", native_repo, "backup", str(source / "no-such-dir"))
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr
