"""RetentionPolicy keep/remove decisions (``kubestash.api.retention``), table-driven.

Expected kept sets are worked out by hand from restic's ``forget`` bucket rules and
KubeStash's maxRetentionPeriod / failedSnapshots semantics (see the module docstring).
Calendar facts used: 2026-01-01 is a Thursday, so 2026 has 53 ISO weeks (2026-W53 is
2026-12-28 .. 2027-01-03) and 2025-12-29 is in 2026-W01; 2026-11-20 is a Friday.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from kubestash.api.retention import Decision, SnapshotRecord, apply_retention_policy
from kubestash.api.storage import RetentionPolicySpec

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def at(text: str, zone: str = "UTC", *, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone), fold=fold)


def ok(name: str, text: str, zone: str = "UTC", *, fold: int = 0) -> SnapshotRecord:
    return SnapshotRecord(name, at(text, zone, fold=fold), succeeded=True)


def bad(name: str, text: str, zone: str = "UTC") -> SnapshotRecord:
    return SnapshotRecord(name, at(text, zone), succeeded=False)


# A general series (UTC), newest first. Nov 16..20 are one ISO week, Nov 9 the week
# before, Oct 31 the week of Oct 26.
SERIES_A = [
    ok("a1", "2026-11-20T10:00"),
    ok("a2", "2026-11-20T08:00"),
    ok("a3", "2026-11-19T23:59"),
    ok("a4", "2026-11-19T00:00"),
    ok("a5", "2026-11-18T12:00"),
    ok("a6", "2026-11-16T12:00"),
    ok("a7", "2026-11-09T12:00"),
    ok("a8", "2026-10-31T12:00"),
    ok("a9", "2025-12-31T12:00"),
]
ALL_A = {s.name for s in SERIES_A}

# Spring forward in Berlin: 2026-03-29 02:00 CET -> 03:00 CEST.
SPRING = [
    ok("b1", "2026-03-29T03:30", "Europe/Berlin"),  # 01:30Z
    ok("b2", "2026-03-29T01:30", "Europe/Berlin"),  # 00:30Z
    ok("b3", "2026-03-29T00:30", "Europe/Berlin"),  # 03-28 23:30Z
    ok("b4", "2026-03-28T23:30", "Europe/Berlin"),  # 03-28 22:30Z
]
# Fall back in Berlin: 2026-10-25 03:00 CEST -> 02:00 CET; 02:xx happens twice.
FALL = [
    ok("c1", "2026-10-25T02:30", "Europe/Berlin", fold=1),  # CET, 01:30Z
    ok("c2", "2026-10-25T02:10", "Europe/Berlin", fold=0),  # CEST, 00:10Z
    ok("c3", "2026-10-25T01:50", "Europe/Berlin"),  # CEST, 10-24 23:50Z
]
# Three close instants around a month end, each recorded in a different zone.
ZONES = [
    ok("m1", "2026-06-30T23:30", "UTC"),  # 23:30Z
    ok("m2", "2026-07-01T08:45", "Asia/Tokyo"),  # 06-30 23:45Z
    ok("m3", "2026-06-30T20:00", "America/New_York"),  # 07-01 00:00Z
]
ZONES_AS_UTC = [SnapshotRecord(s.name, s.time.astimezone(UTC), s.succeeded) for s in ZONES]
# Around the 53-week ISO year 2026.
WEEK53 = [
    ok("w1", "2027-01-04T08:00"),  # 2027-W01
    ok("w2", "2027-01-03T20:00"),  # 2026-W53
    ok("w3", "2027-01-01T01:00"),  # 2026-W53
    ok("w4", "2026-12-31T22:00"),  # 2026-W53
    ok("w5", "2026-12-28T00:30"),  # 2026-W53 (Monday)
    ok("w6", "2026-12-27T23:00"),  # 2026-W52 (Sunday)
]
WEEK1 = [
    ok("y1", "2026-01-04T12:00"),  # 2026-W01
    ok("y2", "2025-12-29T12:00"),  # 2026-W01, but calendar year 2025
    ok("y3", "2025-12-28T12:00"),  # 2025-W52
]
MONTH_ENDS = [
    ok("e1", "2026-03-01T00:00"),
    ok("e2", "2026-02-28T23:59"),
    ok("e3", "2026-02-01T00:00"),
    ok("e4", "2026-01-31T23:59"),
    ok("e5", "2026-01-31T00:00"),
]
TIES = [
    ok("y", "2026-11-20T09:00"),
    ok("x-b", "2026-11-20T10:00"),
    ok("x-a", "2026-11-20T10:00"),
]
WITH_FAILED = [
    bad("f0", "2026-11-20T11:00"),
    ok("s1", "2026-11-20T10:00"),
    bad("f1", "2026-11-20T09:00"),
    ok("s2", "2026-11-20T08:00"),
    bad("f2", "2026-11-19T09:00"),
    ok("s3", "2026-11-18T07:00"),
]


@dataclass
class Case:
    id: str
    spec: dict[str, Any]
    snapshots: list[SnapshotRecord]
    kept: set[str]
    now: datetime = NOW
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)


def keep(**rules: int) -> dict[str, Any]:
    return {"successfulSnapshots": rules}


CASES = [
    # ---- each rule alone
    Case("last-3", keep(last=3), SERIES_A, {"a1", "a2", "a3"}),
    Case("hourly-3", keep(hourly=3), SERIES_A, {"a1", "a2", "a3"}),
    Case("daily-3", keep(daily=3), SERIES_A, {"a1", "a3", "a5"}),
    Case("weekly-3", keep(weekly=3), SERIES_A, {"a1", "a7", "a8"}),
    Case("monthly-2", keep(monthly=2), SERIES_A, {"a1", "a8"}),
    Case("yearly-1", keep(yearly=1), SERIES_A, {"a1"}),
    # ---- counts larger than the number of snapshots / buckets
    Case("last-100", keep(last=100), SERIES_A, ALL_A),
    Case("hourly-100", keep(hourly=100), SERIES_A, ALL_A),
    Case("daily-100", keep(daily=100), SERIES_A, ALL_A - {"a2", "a4"}),
    Case("yearly-5", keep(yearly=5), SERIES_A, {"a1", "a9"}),
    # ---- combined rules
    Case(
        "last1-daily2-monthly3",
        keep(last=1, daily=2, monthly=3),
        SERIES_A,
        {"a1", "a3", "a8", "a9"},
        reasons={
            "a1": ("kept: last 1/1", "kept: daily 2026-11-20", "kept: monthly 2026-11"),
            "a3": ("kept: daily 2026-11-19",),
            "a9": ("kept: monthly 2025-12",),
            "a2": ("removed: not selected by any rule",),
        },
    ),
    Case("hourly1-weekly2-yearly1", keep(hourly=1, weekly=2, yearly=1), SERIES_A, {"a1", "a7"}),
    Case("last2-weekly2", keep(last=2, weekly=2), SERIES_A, {"a1", "a2", "a7"}),
    # ---- last=0 and empty policies
    Case("last-0-alone-keeps-all", keep(last=0), SERIES_A, ALL_A),
    Case("last-0-with-daily", keep(last=0, daily=2), SERIES_A, {"a1", "a3"}),
    Case("empty-keep-policy", keep(), SERIES_A, ALL_A),
    Case(
        "no-successful-rules",
        {},
        SERIES_A[:2],
        {"a1", "a2"},
        reasons={"a1": ("kept: no successfulSnapshots rules",)},
    ),
    Case("no-snapshots", keep(last=3), [], set()),
    # ---- equal timestamps: ties broken by name ascending
    Case("ties-last-1", keep(last=1), TIES, {"x-a"}),
    Case("ties-last-1-reversed-input", keep(last=1), TIES[::-1], {"x-a"}),
    Case("ties-hourly-2", keep(hourly=2), TIES, {"x-a", "y"}),
    Case(
        "ties-same-instant-other-zone",
        keep(last=1),
        [ok("q", "2026-11-20T11:00", "Europe/Berlin"), ok("p", "2026-11-20T10:00")],
        {"p"},
    ),
    # ---- failed snapshots
    Case(
        "failed-default-1",
        {},
        WITH_FAILED,
        {"f0", "s1", "s2", "s3"},
        reasons={"f0": ("kept: failed last 1/1",), "f1": ("removed: failed beyond last 1",)},
    ),
    Case("failed-last-2", {"failedSnapshots": {"last": 2}}, WITH_FAILED, {"f0", "f1", "s1", "s2", "s3"}),
    Case("failed-last-0", {"failedSnapshots": {"last": 0}}, WITH_FAILED, {"s1", "s2", "s3"}),
    Case("failed-last-10", {"failedSnapshots": {"last": 10}}, WITH_FAILED, {"f0", "f1", "f2", "s1", "s2", "s3"}),
    Case(
        "failed-not-counted-by-last",
        {**keep(last=2), "failedSnapshots": {"last": 0}},
        WITH_FAILED,
        {"s1", "s2"},
    ),
    Case(
        "failed-not-counted-by-daily",
        {**keep(daily=1), "failedSnapshots": {"last": 0}},
        WITH_FAILED,
        {"s1"},
    ),
    Case("only-failed-default", keep(last=1), [bad("f1", "2026-11-20T09:00"), bad("f2", "2026-11-19T09:00")], {"f1"}),
    # ---- maxRetentionPeriod
    Case(
        "max-30d-alone",
        {"maxRetentionPeriod": "30d"},
        SERIES_A,
        ALL_A - {"a9"},
        reasons={"a9": ("removed: older than maxRetentionPeriod 30d",)},
    ),
    Case("max-2mo-is-60d", {"maxRetentionPeriod": "2mo"}, SERIES_A, ALL_A - {"a9"}),
    Case("max-1y-is-365d", {"maxRetentionPeriod": "1y"}, SERIES_A, ALL_A),
    Case("max-1w", {"maxRetentionPeriod": "1w"}, SERIES_A, ALL_A - {"a7", "a8", "a9"}),
    Case(
        "max-7d-with-daily-10",
        {"maxRetentionPeriod": "7d", **keep(daily=10)},
        SERIES_A,
        {"a1", "a3", "a5", "a6"},
        reasons={
            "a7": ("removed: older than maxRetentionPeriod 7d",),
            "a4": ("removed: not selected by any rule",),
        },
    ),
    Case("max-1y-with-monthly-12", {"maxRetentionPeriod": "1y", **keep(monthly=12)}, SERIES_A, {"a1", "a8", "a9"}),
    Case(
        "max-boundary-1d",
        {"maxRetentionPeriod": "1d"},
        [ok("at", "2026-11-19T12:00"), ok("before", "2026-11-19T11:59:59")],
        {"at"},
    ),
    Case(
        "max-boundary-in-other-zone",
        {"maxRetentionPeriod": "1d"},
        [ok("at", "2026-11-19T13:00", "Europe/Berlin"), ok("before", "2026-11-19T20:59:59", "Asia/Tokyo")],
        {"at"},
    ),
    Case(
        "max-boundary-1mo-12h",
        {"maxRetentionPeriod": "1mo12h"},
        [ok("at", "2026-10-21T00:00"), ok("before", "2026-10-20T23:59")],
        {"at"},
    ),
    Case(
        "max-removes-failed-too",
        {"maxRetentionPeriod": "1d", "failedSnapshots": {"last": 5}},
        [bad("f-new", "2026-11-20T09:00"), bad("f-old", "2026-11-18T09:00"), ok("s-old", "2026-11-01T00:00")],
        {"f-new"},
    ),
    # ---- DST boundaries (buckets in the snapshot's own wall clock)
    Case("spring-hourly-10", keep(hourly=10), SPRING, {"b1", "b2", "b3", "b4"}),
    Case("spring-daily-2", keep(daily=2), SPRING, {"b1", "b4"}),
    Case("fall-hourly-3", keep(hourly=3), FALL, {"c1", "c3"}),
    Case("fall-daily-2", keep(daily=2), FALL, {"c1"}),
    Case("fall-last-2", keep(last=2), FALL, {"c1", "c2"}),
    # ---- the same instants, recorded in different zones
    Case(
        "zones-daily-3",
        keep(daily=3),
        ZONES,
        {"m1", "m2", "m3"},
        reasons={"m3": ("kept: daily 2026-06-30",), "m2": ("kept: daily 2026-07-01",)},
    ),
    Case("zones-as-utc-daily-3", keep(daily=3), ZONES_AS_UTC, {"m2", "m3"}),
    Case("zones-monthly-2", keep(monthly=2), ZONES, {"m2", "m3"}),
    Case("zones-monthly-3", keep(monthly=3), ZONES, {"m1", "m2", "m3"}),
    Case("zones-as-utc-monthly-3", keep(monthly=3), ZONES_AS_UTC, {"m2", "m3"}),
    Case("zones-last-1", keep(last=1), ZONES, {"m3"}),
    # ---- year boundaries, ISO week 53, month ends
    Case(
        "week53-weekly-3",
        keep(weekly=3),
        WEEK53,
        {"w1", "w2", "w6"},
        reasons={"w1": ("kept: weekly 2027-W01",), "w2": ("kept: weekly 2026-W53",), "w6": ("kept: weekly 2026-W52",)},
    ),
    Case("week53-yearly-3", keep(yearly=3), WEEK53, {"w1", "w4"}),
    Case("week53-monthly-2", keep(monthly=2), WEEK53, {"w1", "w4"}),
    Case("week53-daily-3", keep(daily=3), WEEK53, {"w1", "w2", "w3"}),
    Case("week1-weekly-5", keep(weekly=5), WEEK1, {"y1", "y3"}),
    Case("week1-yearly-5", keep(yearly=5), WEEK1, {"y1", "y2"}),
    Case("month-ends-monthly-10", keep(monthly=10), MONTH_ENDS, {"e1", "e2", "e4"}),
    Case("month-ends-daily-3", keep(daily=3), MONTH_ENDS, {"e1", "e2", "e3"}),
]


def decide(case: Case) -> list[Decision]:
    return apply_retention_policy(RetentionPolicySpec.model_validate(case.spec), case.snapshots, case.now)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kept_set(case: Case) -> None:
    decisions = decide(case)
    assert {d.snapshot.name for d in decisions} == {s.name for s in case.snapshots}
    assert {d.snapshot.name for d in decisions if d.keep} == case.kept
    for decision in decisions:
        prefix = "kept: " if decision.keep else "removed: "
        assert decision.reasons, decision
        assert all(r.startswith(prefix) for r in decision.reasons), decision
    by_name = {d.snapshot.name: d.reasons for d in decisions}
    for name, reasons in case.reasons.items():
        assert by_name[name] == reasons


def test_case_table_is_large_and_unique() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


def test_decisions_are_newest_first_with_name_tie_break() -> None:
    snaps = [*SERIES_A[::-1], *TIES, *ZONES]
    decisions = apply_retention_policy(RetentionPolicySpec(), snaps, NOW)
    order = [d.snapshot.name for d in decisions]
    assert order == ["a1", "x-a", "x-b", "y", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "m3", "m2", "m1", "a9"]


def test_last_reasons_count_up() -> None:
    decisions = decide(Case("r", keep(last=5), SERIES_A, set()))
    assert [d.reasons for d in decisions[:6]] == [
        ("kept: last 1/5",),
        ("kept: last 2/5",),
        ("kept: last 3/5",),
        ("kept: last 4/5",),
        ("kept: last 5/5",),
        ("removed: not selected by any rule",),
    ]


def test_hourly_reason_uses_local_wall_clock() -> None:
    decisions = decide(Case("r", keep(hourly=1), SPRING, set()))
    assert decisions[0].reasons == ("kept: hourly 2026-03-29T03",)


def test_naive_snapshot_time_is_rejected() -> None:
    naive = SnapshotRecord("n", datetime(2026, 11, 20, 10, 0), succeeded=True)
    with pytest.raises(ValueError, match="timezone-aware"):
        apply_retention_policy(RetentionPolicySpec(), [naive], NOW)


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="now must be a timezone-aware"):
        apply_retention_policy(RetentionPolicySpec(), SERIES_A, datetime(2026, 11, 20))


def test_duplicate_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate snapshot name 'a1'"):
        apply_retention_policy(RetentionPolicySpec(), [SERIES_A[0], SERIES_A[0]], NOW)


def test_invalid_period_is_rejected() -> None:
    with pytest.raises(ValueError, match="invalid retention period"):
        apply_retention_policy(RetentionPolicySpec(max_retention_period="30x"), SERIES_A, NOW)
