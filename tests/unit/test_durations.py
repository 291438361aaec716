"""Go durations (``metav1.Duration``) and KubeStash retention periods (``1y2mo3w4d5h6m``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kubestash.api.durations import (
    RetentionPeriod,
    format_go_duration,
    parse_go_duration,
    parse_retention_period,
)

# --------------------------------------------------------------------------- Go durations: parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1m0s", timedelta(minutes=1)),
        ("1m", timedelta(minutes=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("250ms", timedelta(milliseconds=250)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("1.5s", timedelta(seconds=1, milliseconds=500)),
        (".5s", timedelta(milliseconds=500)),
        ("1.s", timedelta(seconds=1)),
        ("2h45m30.5s", timedelta(hours=2, minutes=45, seconds=30, milliseconds=500)),
        ("100us", timedelta(microseconds=100)),
        ("100µs", timedelta(microseconds=100)),  # U+00B5 MICRO SIGN
        ("100μs", timedelta(microseconds=100)),  # U+03BC GREEK SMALL LETTER MU
        ("1000ns", timedelta(microseconds=1)),
        ("-1m", timedelta(minutes=-1)),
        ("-1h30m", -timedelta(hours=1, minutes=30)),
        ("+5s", timedelta(seconds=5)),
        ("0", timedelta(0)),
        ("-0", timedelta(0)),
        ("0s", timedelta(0)),
        ("48h", timedelta(days=2)),
    ],
)
def test_parse_go_duration(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


def test_parse_go_duration_keeps_fractional_seconds_of_a_status_duration() -> None:
    # status.duration as the KubeStash operator writes it; timedelta holds microseconds,
    # so the value must be exact to the microsecond.
    parsed = parse_go_duration("10.089085545s")
    assert abs(parsed.total_seconds() - 10.089085545) < 1e-6
    assert parsed == timedelta(seconds=10, microseconds=89086)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid duration ''"),
        ("10", "missing unit in duration '10'"),
        ("1x", "unknown unit 'x' in duration '1x'"),
        ("5 s", "unknown unit ' s' in duration '5 s'"),
        ("h", "invalid duration 'h'"),
        ("-", "invalid duration '-'"),
        ("+", "invalid duration '+'"),
        (".s", "invalid duration '.s'"),
        ("1hx", "invalid duration '1hx'"),
        ("1.5.5s", "missing unit in duration '1.5.5s'"),
        (" 5s", "invalid duration ' 5s'"),
        ("5S", "unknown unit 'S' in duration '5S'"),
    ],
)
def test_parse_go_duration_rejects_with_go_wording(text: str, message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_go_duration(text)
    assert str(excinfo.value) == message


# --------------------------------------------------------------------------- Go durations: printing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(seconds=3600), "1h0m0s"),
        (timedelta(minutes=1), "1m0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(microseconds=1), "1µs"),
        (timedelta(hours=25, milliseconds=500), "25h0m0.5s"),
        (timedelta(hours=1, minutes=2, seconds=3, microseconds=400_000), "1h2m3.4s"),
        (timedelta(seconds=10, microseconds=89086), "10.089086s"),
        (timedelta(seconds=-90), "-1m30s"),
        (timedelta(milliseconds=-250), "-250ms"),
        (timedelta(days=2), "48h0m0s"),
    ],
)
def test_format_go_duration_matches_go_string(value: timedelta, expected: str) -> None:
    assert format_go_duration(value) == expected


def test_format_uses_micro_sign_like_go() -> None:
    # Go prints U+00B5, not U+03BC; a kubectl column comparison would notice.
    assert format_go_duration(timedelta(microseconds=7)) == "7\u00b5s"


@pytest.mark.parametrize(
    "canonical",
    [
        "0s",
        "30s",
        "1m0s",
        "1m30s",
        "1h0m0s",
        "1h30m0s",
        "250ms",
        "1.5s",
        "1.5ms",
        "1µs",
        "-1m0s",
        "10.089086s",
        "100h0m0.000001s",
    ],
)
def test_go_string_round_trips(canonical: str) -> None:
    assert format_go_duration(parse_go_duration(canonical)) == canonical


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("1h30m", "1h30m0s"), ("90s", "1m30s"), ("1.5h", "1h30m0s"), ("0", "0s"), ("1000ms", "1s"), ("60m", "1h0m0s")],
)
def test_non_canonical_input_is_printed_canonically(text: str, canonical: str) -> None:
    assert format_go_duration(parse_go_duration(text)) == canonical


@pytest.mark.parametrize(
    "value",
    [
        timedelta(0),
        timedelta(seconds=59),
        timedelta(hours=3, minutes=7, seconds=1, microseconds=250),
        timedelta(days=-1, seconds=3),
        timedelta(microseconds=999_999),
    ],
)
def test_timedelta_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value


# --------------------------------------------------------------------------- retention periods


def test_full_retention_period_in_minutes() -> None:
    period = parse_retention_period("1y2mo3w4d5h6m")
    assert period == RetentionPeriod(years=1, months=2, weeks=3, days=4, hours=5, minutes=6)
    # year = 365 days, month = 30 days (KubeStash ToMinutes)
    days = 365 + 2 * 30 + 3 * 7 + 4
    assert period.to_minutes() == days * 24 * 60 + 5 * 60 + 6 == 648_306
    assert period.to_timedelta() == timedelta(days=days, hours=5, minutes=6)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("2mo", 2 * 30 * 24 * 60),  # the docs' RetentionPolicy example
        ("1y", 365 * 24 * 60),
        ("30d", 30 * 24 * 60),
        ("1w", 7 * 24 * 60),
        ("12h", 12 * 60),
        ("5m", 5),  # "m" is minutes, not months
        ("1mo5m", 30 * 24 * 60 + 5),
        ("0d", 0),
        ("6m5h", 5 * 60 + 6),  # order of units is free
        (" 7d ", 7 * 24 * 60),
    ],
)
def test_retention_period_to_minutes(text: str, minutes: int) -> None:
    assert parse_retention_period(text).to_minutes() == minutes


def test_month_and_minute_are_distinct_units() -> None:
    assert parse_retention_period("3mo") == RetentionPeriod(months=3)
    assert parse_retention_period("3m") == RetentionPeriod(minutes=3)


@pytest.mark.parametrize(("text", "unit"), [("1d2d", "d"), ("1mo2mo", "mo"), ("5m1h5m", "m")])
def test_retention_period_rejects_duplicate_unit(text: str, unit: str) -> None:
    with pytest.raises(ValueError, match="given twice") as excinfo:
        parse_retention_period(text)
    assert repr(unit) in str(excinfo.value)


@pytest.mark.parametrize("text", ["30", "d", "1x", "1M", "1.5d", "-1d", "1d 2h", "1 d", "1s", "1h30m10s", "P1D"])
def test_retention_period_rejects_bad_syntax_with_message(text: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        parse_retention_period(text)
    message = str(excinfo.value)
    assert repr(text) in message
    assert "1y2mo3w4d5h6m" in message  # tells the user what is expected


@pytest.mark.parametrize("text", ["", "   "])
def test_retention_period_rejects_empty(text: str) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        parse_retention_period(text)
