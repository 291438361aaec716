"""Cron schedules as a Kubernetes CronJob accepts them.

Kubernetes parses ``spec.schedule`` with robfig/cron's standard parser: five
fields (minute hour day-of-month month day-of-week) with ``*``, ``?``, lists,
ranges, steps and JAN-DEC / SUN-SAT names, or one of the descriptors
``@yearly @annually @monthly @weekly @daily @midnight @hourly`` and
``@every <duration>``; ``TZ=``/``CRON_TZ=`` prefixes are refused. croniter
accepts a superset (seconds and year fields, ``L``, ``W``, ``#``, ``H``), so a
schedule it likes could still be refused by a real cluster; this module checks
the exact grammar instead, and returns the reason a user can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from kubestash.api.durations import parse_go_duration

DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_MONTHS = {
    m: i + 1 for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, _MONTHS),
    _Field("day of week", 0, 6, _DAYS),
)


def schedule_error(schedule: str) -> str | None:
    """Why ``schedule`` is not a valid CronJob schedule, or None if it is."""
    spec = schedule.strip()
    if not spec:
        return "must not be empty"
    if spec.startswith(("TZ=", "CRON_TZ=")):
        return "TZ and CRON_TZ are not supported in the schedule"
    if spec.startswith("@"):
        return _descriptor_error(spec)
    fields = spec.split()
    if len(fields) != len(_FIELDS):
        return f"expected exactly 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}"
    for text, field in zip(fields, _FIELDS, strict=True):
        for part in text.split(","):
            error = _range_error(part, field)
            if error:
                return f"{field.name} {text!r}: {error}"
    return None


def _descriptor_error(spec: str) -> str | None:
    if spec.startswith("@every "):
        # robfig/cron takes everything after "@every " (one space) as the duration
        rest = spec[len("@every ") :]
        try:
            if parse_go_duration(rest).total_seconds() <= 0:
                return "@every needs a positive duration"
        except ValueError as exc:
            return f"@every: {exc}"
        return None
    if spec in DESCRIPTORS:
        return None
    return f"unrecognized descriptor {spec!r} (use one of {', '.join(sorted(DESCRIPTORS))} or @every <duration>)"


def _range_error(part: str, field: _Field) -> str | None:
    range_text, slash, step_text = part.partition("/")
    if slash and (not step_text.isdigit() or int(step_text) == 0):
        return f"step {step_text!r} must be a positive number"
    if range_text in ("*", "?"):
        return None
    low_text, dash, high_text = range_text.partition("-")
    try:
        low = _value(low_text, field)
        high = _value(high_text, field) if dash else low
    except ValueError as exc:
        return str(exc)
    if low > high:
        return f"beginning of range ({low}) beyond end of range ({high})"
    return None


def _value(text: str, field: _Field) -> int:
    if text.lower() in field.names:
        return field.names[text.lower()]
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number" + (" or a name" if field.names else ""))
    value = int(text)
    if not field.low <= value <= field.high:
        raise ValueError(f"{value} is out of range {field.low}-{field.high}")
    return value


def next_fire(schedule: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` that ``schedule`` fires (UTC, like a CronJob without a time zone).

    ``@every D`` fires every D counted from ``after`` (robfig/cron's rule: the next run is the last one plus D).
    Assumes a schedule :func:`schedule_error` accepted.
    """
    from croniter import croniter

    spec = schedule.strip()
    if spec.startswith("@every"):
        return after + parse_go_duration(spec.split(None, 1)[1])
    base = after.astimezone(UTC)
    fired: datetime = croniter(spec, base).get_next(datetime)
    return fired.astimezone(UTC)
