"""CronJob schedules: exactly what Kubernetes (robfig/cron standard parser) accepts, with a usable reason."""

from __future__ import annotations

import pytest

from kubestash.api.schedule import DESCRIPTORS, schedule_error


@pytest.mark.parametrize(
    "schedule",
    [
        "*/5 * * * *",  # the docs' BackupConfiguration
        "0 2 * * *",
        "@hourly",
        "@daily",
        "@midnight",
        "@weekly",
        "@monthly",
        "@yearly",
        "@annually",
        "@every 1h30m",
        "@every 30s",
        "@every 1.5h",
        "0 0 1-15/2 JAN,MAR MON-FRI",
        "0 0 * jan-mar mon-fri",  # names are case-insensitive
        "30 4 * * 0",
        "30 4 * * 6",
        "0 0 ? * *",
        "5/15 * * * *",
        "0,15,30,45 * * * *",
        "59 23 31 12 *",
        "0 0 1 1 SUN",
        "  0 2 * * *  ",
        "0\t2 * * *",
    ],
)
def test_valid_schedules(schedule: str) -> None:
    assert schedule_error(schedule) is None


def test_every_descriptor_is_listed() -> None:
    assert {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"} == DESCRIPTORS
    for descriptor in DESCRIPTORS:
        assert schedule_error(descriptor) is None


@pytest.mark.parametrize("schedule", ["", "   "])
def test_empty_schedule(schedule: str) -> None:
    assert schedule_error(schedule) == "must not be empty"


@pytest.mark.parametrize(("schedule", "found"), [("* * * *", 4), ("* * * * * *", 6), ("0 0 1 1 * 2027", 6), ("5", 1)])
def test_wrong_field_count(schedule: str, found: int) -> None:
    error = schedule_error(schedule)
    assert error is not None
    assert "exactly 5 fields" in error
    assert f"found {found}" in error


@pytest.mark.parametrize(
    ("schedule", "field", "detail"),
    [
        ("61 * * * *", "minute '61'", "out of range 0-59"),
        ("60 * * * *", "minute '60'", "out of range 0-59"),
        ("* 25 * * *", "hour '25'", "out of range 0-23"),
        ("* 24 * * *", "hour '24'", "out of range 0-23"),
        ("0 0 0 * *", "day of month '0'", "out of range 1-31"),
        ("0 0 32 * *", "day of month '32'", "out of range 1-31"),
        ("0 0 * 13 *", "month '13'", "out of range 1-12"),
        ("0 0 * 0 *", "month '0'", "out of range 1-12"),
        ("0 0 * * 7", "day of week '7'", "out of range 0-6"),
        ("0 0 * FOO *", "month 'FOO'", "not a number or a name"),
        ("0 0 * * FUNDAY", "day of week 'FUNDAY'", "not a number or a name"),
        ("jan * * * *", "minute 'jan'", "not a number"),
        ("0 0 15-1 * *", "day of month '15-1'", "beginning of range (15) beyond end of range (1)"),
        ("0 0 * * FRI-MON", "day of week 'FRI-MON'", "beginning of range (5) beyond end of range (1)"),
        ("*/0 * * * *", "minute '*/0'", "step '0' must be a positive number"),
        ("*/x * * * *", "minute '*/x'", "step 'x' must be a positive number"),
        ("1,2,60 * * * *", "minute '1,2,60'", "60 is out of range"),
        ("0 0 L * *", "day of month 'L'", "not a number"),  # croniter-only extension
        ("0 0 * * 1#2", "day of week '1#2'", "not a number"),  # croniter-only extension
    ],
)
def test_invalid_field_names_the_field(schedule: str, field: str, detail: str) -> None:
    error = schedule_error(schedule)
    assert error is not None
    assert error.startswith(f"{field}: ")
    assert detail in error


@pytest.mark.parametrize("schedule", ["@fortnightly", "@Daily", "@every", "@every1h", "@everyday", "@hourly 5"])
def test_unknown_descriptor(schedule: str) -> None:
    error = schedule_error(schedule)
    assert error is not None
    assert error.startswith(f"unrecognized descriptor {schedule!r}")
    assert "@every <duration>" in error


@pytest.mark.parametrize(
    ("schedule", "detail"),
    [
        ("@every 10", "missing unit in duration '10'"),
        ("@every 1x", "unknown unit 'x'"),
        ("@every soon", "invalid duration 'soon'"),
        ("@every  1h", "invalid duration ' 1h'"),  # robfig takes everything after "@every "
    ],
)
def test_every_with_bad_duration(schedule: str, detail: str) -> None:
    error = schedule_error(schedule)
    assert error is not None
    assert error.startswith("@every: ")
    assert detail in error


@pytest.mark.parametrize(
    "schedule",
    ["CRON_TZ=UTC 0 * * * *", "TZ=UTC 0 * * * *", "CRON_TZ=Europe/Berlin @daily", "  TZ=Asia/Dhaka */5 * * * *"],
)
def test_time_zone_prefix_is_refused(schedule: str) -> None:
    # Kubernetes refuses TZ/CRON_TZ in spec.schedule (spec.timeZone is the supported way)
    assert schedule_error(schedule) == "TZ and CRON_TZ are not supported in the schedule"
