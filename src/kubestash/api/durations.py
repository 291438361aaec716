"""The two duration syntaxes in KubeStash's API, parsed and printed exactly.

* Go durations (``metav1.Duration``: ``30s``, ``1m0s``, ``1h30m``,
  ``10.089085545s``) in ``backupTimeout``, ``retryConfig.delay``, hook
  ``timeout`` and every ``status.duration``. Python has no parser for Go's
  grammar, so it is written here against ``time.ParseDuration``'s rules.
* Retention periods (``1y2mo3w4d5h6m``) in ``RetentionPolicy.spec.maxRetentionPeriod``,
  where a month is 30 days and a year 365 days, as KubeStash's ``ToMinutes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

_GO_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_TERM = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> timedelta:
    """Parse a Go duration string; raise ValueError with Go's wording on bad input."""
    s = text
    sign = 1
    if s and s[0] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return timedelta(0)
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total_ns = Decimal(0)
    pos = 0
    while pos < len(s):
        match = _GO_TERM.match(s, pos)
        if match is None:
            number = re.match(r"(\d+\.?\d*|\.\d+)([^.0-9]*)", s[pos:])
            if number and number.group(2):
                raise ValueError(f"unknown unit {number.group(2)!r} in duration {text!r}")
            if number:
                raise ValueError(f"missing unit in duration {text!r}")
            raise ValueError(f"invalid duration {text!r}")
        total_ns += Decimal(match.group(1)) * _GO_UNITS_NS[match.group(2)]
        pos = match.end()
    return sign * timedelta(microseconds=float(total_ns / 1000))


def format_go_duration(value: timedelta) -> str:
    """Format like Go's ``time.Duration.String()``: ``1h2m3.5s``, ``1m0s``, ``250ms``, ``0s``."""
    total_ns = round(value.total_seconds() * 1_000_000_000)
    if total_ns == 0:
        return "0s"
    sign = "-" if total_ns < 0 else ""
    ns = abs(total_ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _trim_fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * 1_000_000_000)
    minutes, rest = divmod(rest, 60 * 1_000_000_000)
    seconds = _trim_fraction(rest, 1_000_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _trim_fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")


@dataclass(frozen=True)
class RetentionPeriod:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0

    def to_minutes(self) -> int:
        days = self.years * 365 + self.months * 30 + self.weeks * 7 + self.days
        return (days * 24 + self.hours) * 60 + self.minutes

    def to_timedelta(self) -> timedelta:
        return timedelta(minutes=self.to_minutes())


_PERIOD_UNITS = {"y": "years", "mo": "months", "w": "weeks", "d": "days", "h": "hours", "m": "minutes"}
_PERIOD_TERM = re.compile(r"(\d+)(mo|y|w|d|h|m)")


def parse_retention_period(text: str) -> RetentionPeriod:
    """Parse ``1y2mo3w4d5h6m``; each unit at most once, numbers non-negative."""
    s = text.strip()
    if not s:
        raise ValueError("must not be empty")
    values: dict[str, int] = {}
    pos = 0
    while pos < len(s):
        match = _PERIOD_TERM.match(s, pos)
        if match is None:
            raise ValueError(
                f"invalid retention period {text!r}: expected terms like 1y2mo3w4d5h6m (units y, mo, w, d, h, m)"
            )
        field = _PERIOD_UNITS[match.group(2)]
        if field in values:
            raise ValueError(f"invalid retention period {text!r}: unit {match.group(2)!r} given twice")
        values[field] = int(match.group(1))
        pos = match.end()
    return RetentionPeriod(**values)
