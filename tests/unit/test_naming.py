"""Names of generated objects must equal KubeStash's so existing objects are found by name.

Shortening follows kmodules ``meta.ValidNameWithPrefixNSuffix``: build
``prefix-name-suffix``; if longer than the limit keep the first ``ceil(max/2)``
and the last ``floor(max/2)`` characters (32 + 31 for 63, 26 + 26 for 52), then
trim ``-`` from both ends. Expected strings below were worked out by hand.
"""

from __future__ import annotations

import re

import pytest

from kubestash.api.naming import (
    CRONJOB_NAME_MAX,
    DNS1123_LABEL_MAX,
    auto_backup_configuration_name,
    backup_session_name,
    component_path,
    snapshot_name,
    storage_cleanup_job_name,
    trigger_cronjob_name,
    valid_name_with_prefix,
    valid_name_with_prefix_n_suffix,
    verification_session_name,
    verifier_cronjob_name,
)

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

LONG_BC = "postgres-production-cluster-nightly-backup"  # 42 characters
TS = 1730194200


def test_limits() -> None:
    assert DNS1123_LABEL_MAX == 63
    # a CronJob's Jobs append an 11-character suffix, so CronJob names stop at 52
    assert CRONJOB_NAME_MAX == 52


# --------------------------------------------------------------------------- BackupSession


def test_backup_session_name_short() -> None:
    assert backup_session_name("sample-backup-dep", "demo-session", 1700000000) == (
        "sample-backup-dep-demo-session-1700000000"
    )


def test_backup_session_name_long_keeps_first_32_and_last_31() -> None:
    # full name "postgres-production-cluster-nightly-backup-frequent-backup-1730194200" has 69 chars
    name = backup_session_name(LONG_BC, "frequent-backup", TS)
    assert name == "postgres-production-cluster-nighckup-frequent-backup-1730194200"
    assert len(name) == 63


def test_backup_session_name_exactly_63_is_not_shortened() -> None:
    invoker = "a" * 40  # 40 + 1 + 11 + 1 + 10 = 63
    name = backup_session_name(invoker, "demo-sessio", TS)
    assert name == f"{invoker}-demo-sessio-{TS}"
    assert len(name) == 63


def test_backup_session_name_64_is_shortened() -> None:
    invoker = "a" * 41
    name = backup_session_name(invoker, "demo-sessio", TS)
    assert len(name) == 63
    # 64 chars: first 32 "a" + last 31 ("a" * 8 + "-demo-sessio-<ts>") drops exactly one "a"
    assert name == "a" * 40 + f"-demo-sessio-{TS}"


@pytest.mark.parametrize("invoker_len", [1, 20, 40, 45, 52, 63, 100, 253])
@pytest.mark.parametrize("session", ["s", "demo-session", "a-rather-long-session-name-for-hourly-runs"])
def test_backup_session_name_properties(invoker_len: int, session: str) -> None:
    invoker = ("backup-" * 40)[: invoker_len - 1] + "x"
    full = f"{invoker}-{session}-{TS}"
    name = backup_session_name(invoker, session, TS)
    assert len(name) <= 63
    assert DNS1123_LABEL.match(name), name
    # the timestamp tail that makes sessions unique always survives
    assert name.endswith(f"-{TS}")
    if len(full) <= 63:
        assert name == full
    else:
        assert name.startswith(full[:32].strip("-"))
        assert name.endswith(full[-31:])


def test_distinct_timestamps_give_distinct_long_names() -> None:
    names = {backup_session_name(LONG_BC, "frequent-backup", TS + i) for i in range(5)}
    assert len(names) == 5


# --------------------------------------------------------------------------- Snapshot


def test_snapshot_name_short() -> None:
    assert snapshot_name("gcs-demo-repo", "sample-backup-dep-demo-session-1700000000") == (
        "gcs-demo-repo-sample-backup-dep-demo-session-1700000000"
    )


def test_snapshot_name_from_shortened_backup_session_keeps_timestamp() -> None:
    backup_session = "postgres-production-cluster-nighckup-frequent-backup-1730194200"
    # full "postgres-backup-repository-" + session prefix + "-1730194200" is 90 characters
    name = snapshot_name("postgres-backup-repository", backup_session)
    assert name == "postgres-backup-repository-postgckup-frequent-backup-1730194200"
    assert len(name) == 63


def test_snapshot_name_timestamp_split_is_the_last_number() -> None:
    # "(.*)-([0-9]+)$" is greedy: only the final numeric segment is the timestamp
    assert snapshot_name("repo", "bc-2-session-3-1700000000") == "repo-bc-2-session-3-1700000000"


def test_snapshot_name_without_timestamp_strips_trailing_dash() -> None:
    assert snapshot_name("gcs-repo", "manual") == "gcs-repo-manual"


def test_snapshot_name_without_timestamp_shortened_strips_trailing_dash() -> None:
    name = snapshot_name("r" * 40, "s" * 40)
    # "r"*40 + "-" + "s"*40 + "-" (82 chars) -> first 32 + last 31, trailing "-" trimmed
    assert name == "r" * 32 + "s" * 30
    assert DNS1123_LABEL.match(name)


@pytest.mark.parametrize("repo_len", [5, 30, 63])
def test_snapshot_name_properties(repo_len: int) -> None:
    repo = "r" * repo_len
    session = backup_session_name(LONG_BC, "frequent-backup", TS)
    name = snapshot_name(repo, session)
    assert len(name) <= 63
    assert name.endswith(f"-{TS}")
    assert name.startswith(repo[:32])
    assert DNS1123_LABEL.match(name)


# --------------------------------------------------------------------------- BackupVerificationSession


def test_verification_session_name_is_session_then_repository() -> None:
    # the docs' sample object: spec.session freq-backup, spec.repository demo-storage
    assert verification_session_name("freq-backup", "demo-storage", 1730194200) == (
        "freq-backup-demo-storage-1730194200"
    )


def test_verification_session_name_long_keeps_timestamp() -> None:
    name = verification_session_name("s" * 50, "r" * 50, TS)
    assert len(name) == 63
    assert name == "s" * 32 + "r" * 20 + f"-{TS}"


# --------------------------------------------------------------------------- CronJobs


def test_trigger_cronjob_name_short() -> None:
    assert trigger_cronjob_name("sample-backup-dep", "demo-session") == "trigger-sample-backup-dep-demo-session"


def test_trigger_cronjob_name_long_keeps_first_26_and_last_26() -> None:
    # "trigger-postgres-production-cluster-nightly-backup-frequent-backup" has 66 chars
    name = trigger_cronjob_name(LONG_BC, "frequent-backup")
    assert name == "trigger-postgres-productiotly-backup-frequent-backup"
    assert len(name) == 52


def test_trigger_cronjob_name_exactly_52_is_not_shortened() -> None:
    bc = "b" * 30  # "trigger-" 8 + 30 + "-" + 13 = 52
    assert trigger_cronjob_name(bc, "demo-session1") == f"trigger-{bc}-demo-session1"


@pytest.mark.parametrize("bc_len", [1, 30, 44, 60, 120])
def test_cronjob_names_fit_the_cronjob_limit(bc_len: int) -> None:
    bc = "c" * bc_len
    for name in (trigger_cronjob_name(bc, "frequent-backup"), verifier_cronjob_name(bc, "gcs-demo-repo")):
        assert len(name) <= 52
        assert DNS1123_LABEL.match(name)
        assert name.startswith("trigger-")


def test_verifier_cronjob_name() -> None:
    assert verifier_cronjob_name("sample-backup-dep", "gcs-demo-repo") == (
        "trigger-verifier-sample-backup-dep-gcs-demo-repo"
    )
    long_name = verifier_cronjob_name(LONG_BC, "gcs-demo-repo")
    assert long_name.startswith("trigger-verifier-")
    assert long_name.endswith("-gcs-demo-repo")
    assert len(long_name) == 52


# --------------------------------------------------------------------------- prefix-only names


def test_storage_cleanup_job_name() -> None:
    assert storage_cleanup_job_name("s3-storage") == "cleanup-s3-storage"


def test_storage_cleanup_job_name_truncates_the_end() -> None:
    name = storage_cleanup_job_name("x" * 70)
    assert name == "cleanup-" + "x" * 55
    assert len(name) == 63


def test_prefix_truncation_strips_trailing_dash() -> None:
    # character 63 is a "-": it is cut away rather than ending the name with "-"
    name = storage_cleanup_job_name("a" * 54 + "-" + "b" * 10)
    assert name == "cleanup-" + "a" * 54
    assert len(name) == 62


def test_valid_name_helpers_trim_dashes_at_both_ends() -> None:
    assert valid_name_with_prefix_n_suffix("", "demo", "1") == "demo-1"
    assert valid_name_with_prefix_n_suffix("repo", "demo", "") == "repo-demo"
    assert valid_name_with_prefix("trigger", "") == "trigger"
    assert valid_name_with_prefix("init", "repo", max_length=6) == "init-r"
    assert valid_name_with_prefix("init", "repo", max_length=5) == "init"


# --------------------------------------------------------------------------- auto-backup


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("Deployment", "kubestash-demo", "deployment-kubestash-demo"),
        ("StatefulSet", "sample-sts", "statefulset-sample-sts"),
        ("PersistentVolumeClaim", "nfs-pvc", "persistentvolumeclaim-nfs-pvc"),
        ("DaemonSet", "node-agent", "daemonset-node-agent"),
    ],
)
def test_auto_backup_configuration_name_same_namespace(kind: str, name: str, expected: str) -> None:
    assert auto_backup_configuration_name(kind, name, "demo", "demo") == expected


def test_auto_backup_configuration_name_other_namespace_is_prefixed() -> None:
    assert auto_backup_configuration_name("Deployment", "kubestash-demo", "prod", "demo") == (
        "prod-deployment-kubestash-demo"
    )


def test_auto_backup_configuration_name_long() -> None:
    same_ns = auto_backup_configuration_name("PersistentVolumeClaim", "p" * 60, "demo", "demo")
    assert same_ns == "persistentvolumeclaim-" + "p" * 41
    other_ns = auto_backup_configuration_name("Deployment", "d" * 60, "production", "demo")
    # "production-deployment-" + 60 = 82 chars -> first 32 + last 31
    assert other_ns == "production-deployment-dddddddddd" + "d" * 31
    assert len(same_ns) == len(other_ns) == 63


# --------------------------------------------------------------------------- component paths


@pytest.mark.parametrize(
    ("session", "component", "expected"),
    [
        ("demo-session", "dump", "repository/v1/demo-session/dump"),
        ("frequent-backup", "dump-pod-0", "repository/v1/frequent-backup/dump-pod-0"),
        ("frequent-backup", "manifest", "repository/v1/frequent-backup/manifest"),
    ],
)
def test_component_path(session: str, component: str, expected: str) -> None:
    assert component_path(session, component) == expected


def test_component_path_with_version() -> None:
    assert component_path("demo-session", "dump", "v2") == "repository/v2/demo-session/dump"
