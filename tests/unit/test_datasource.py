"""Which Snapshot a RestoreSession's dataSource means: by name, latest, or a point in time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kubestash.api.datasource import Candidate, NoSnapshot, choose_snapshot
from kubestash.api.restore import RestoreDataSource

T1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
T2 = T1 + timedelta(hours=1)
T3 = T1 + timedelta(hours=2)
SNAPS = [
    Candidate("s1", "repo", "Succeeded", T1),
    Candidate("s2", "repo", "Succeeded", T2),
    Candidate("s2b-failed", "repo", "Failed", T2 + timedelta(minutes=30)),
    Candidate("s3", "repo", "Succeeded", T3),
    Candidate("other", "other-repo", "Succeeded", T3 + timedelta(hours=1)),
    Candidate("running", "repo", "Running", T3 + timedelta(hours=2)),
]


def choose(**source: object) -> str:
    return choose_snapshot(RestoreDataSource.model_validate(source), "demo", SNAPS).name


def test_latest_is_the_newest_succeeded_snapshot_of_the_repository() -> None:
    assert choose(repository="repo", snapshot="latest") == "s3"
    assert choose(repository="other-repo", snapshot="latest") == "other"


@pytest.mark.parametrize(
    ("target", "exclusive", "expected"),
    [
        (T2 + timedelta(minutes=45), False, "s2"),  # between t2 and t3; the failed one in between is skipped
        (T2, False, "s2"),  # exactly at t2 is eligible by default
        (T2, True, "s1"),  # ...but not when exclusive
        (T3 + timedelta(days=1), False, "s3"),
    ],
)
def test_point_in_time(target: datetime, exclusive: bool, expected: str) -> None:
    pitr = {"targetTime": target.isoformat().replace("+00:00", "Z"), "exclusive": exclusive}
    assert choose(repository="repo", pitr=pitr) == expected


def test_nothing_before_the_target_time_says_so() -> None:
    with pytest.raises(NoSnapshot, match=r"no Succeeded Snapshot of repository demo/repo was taken at or before"):
        choose(repository="repo", pitr={"targetTime": "2026-01-01T00:00:00Z"})


def test_named_snapshot_must_exist_belong_and_have_succeeded() -> None:
    assert choose(repository="repo", snapshot="s1") == "s1"
    assert choose(snapshot="other") == "other"
    with pytest.raises(NoSnapshot, match="Snapshot demo/nope not found"):
        choose(snapshot="nope")
    with pytest.raises(NoSnapshot, match="belongs to repository other-repo, not repo"):
        choose(repository="repo", snapshot="other")
    with pytest.raises(NoSnapshot, match="is Failed, not Succeeded"):
        choose(snapshot="s2b-failed")
    with pytest.raises(NoSnapshot, match="is Running, not Succeeded"):
        choose(snapshot="running")


def test_a_repository_without_success_has_no_latest() -> None:
    with pytest.raises(NoSnapshot, match="repository demo/empty has no Succeeded Snapshot"):
        choose(repository="empty", snapshot="latest")
