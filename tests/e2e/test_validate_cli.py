"""`kubestash validate` as a user runs it in CI: the installed command, real files, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compat_corpus import COMPAT_ROOT as COMPAT

KUBESTASH = Path(sys.prefix) / "bin" / "kubestash"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
apiVersion: storage.kubestash.com/v1alpha1
kind: BackupStorage
metadata: {name: s3-storage, namespace: demo}
spec:
  storage: {provider: s3, s3: {bucket: kubestash, region: us-east-1, prefix: demo, secretName: s3-secret}}
  default: true
---
apiVersion: v1
kind: Secret
metadata: {name: s3-secret, namespace: demo}
stringData: {AWS_ACCESS_KEY_ID: x}
"""

BAD_RETENTION = """\
---
apiVersion: storage.kubestash.com/v1alpha1
kind: RetentionPolicy
metadata: {name: keep-forever, namespace: demo}
spec:
  maxRetentionPeriod: 1x
"""

GOOD_RETENTION = """\
---
apiVersion: storage.kubestash.com/v1alpha1
kind: RetentionPolicy
metadata: {name: keep-ten, namespace: demo}
spec:
  successfulSnapshots: {last: 10}
"""


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBESTASH), "validate", *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_one_bad_object_among_good_ones_fails_and_is_named(tmp_path: Path) -> None:
    manifest = tmp_path / "backup.yaml"
    manifest.write_text(GOOD + BAD_RETENTION + GOOD_RETENTION)
    result = run("-f", str(manifest))
    assert result.returncode == 1
    problems = result.stdout.splitlines()
    bad = [line for line in problems if "skipped" not in line]
    assert len(bad) == 1
    assert bad[0].startswith(f"{manifest}:2 RetentionPolicy/keep-forever: spec.maxRetentionPeriod: Invalid value:")
    assert f"{manifest}:1 Secret/s3-secret: skipped" in result.stdout
    assert "2 valid, 1 invalid, 1 skipped" in result.stderr


def test_valid_input_exits_zero(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD + GOOD_RETENTION)
    result = run("-f", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 valid, 0 invalid, 1 skipped" in result.stderr


def test_yaml_syntax_error_gives_file_and_line(tmp_path: Path) -> None:
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(GOOD + "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n")
    result = run("-f", str(manifest))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{manifest}:17: ")
    assert "Traceback" not in result.stdout + result.stderr


def test_stdin_and_directories(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "rp.yml").write_text(BAD_RETENTION)
    (tmp_path / "notes.txt").write_text("not a manifest")
    from_dir = run("-f", str(tmp_path))
    assert from_dir.returncode == 1
    assert "rp.yml:0 RetentionPolicy/keep-forever: spec.maxRetentionPeriod" in from_dir.stdout
    from_stdin = run("-f", "-", stdin=GOOD_RETENTION)
    assert from_stdin.returncode == 0
    assert "1 valid, 0 invalid, 0 skipped" in from_stdin.stderr


def test_cross_object_rules_follow_scope(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text(GOOD)
    (tmp_path / "two.yaml").write_text(
        GOOD.replace("name: s3-storage", "name: other").replace("prefix: demo", "prefix: x")
    )
    assert run("-f", str(tmp_path)).returncode == 0
    together = run("-f", str(tmp_path), "--scope", "directory")
    assert together.returncode == 1
    assert "spec.default: Forbidden: multiple default BackupStorages" in together.stdout


def test_not_a_mapping_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "list.yaml"
    manifest.write_text("- just\n- a list\n")
    result = run("-f", str(manifest))
    assert result.returncode == 1
    assert "not a Kubernetes object" in result.stdout


@pytest.mark.parametrize("folder", ["kubestash-docs", "kubestash-catalog"])
def test_compat_folders_validate(folder: str) -> None:
    result = run("-f", str(COMPAT / folder), "--quiet")
    assert result.returncode == 0, result.stdout
    valid = int(result.stderr.split()[0])
    assert valid >= 10


def test_quickstart_examples_validate_together() -> None:
    result = run("-f", str(EXAMPLES / "quickstart"), "--scope", "input")
    assert result.returncode == 0, result.stdout
