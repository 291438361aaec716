"""Which Snapshots a RetentionPolicy keeps: one pure function, ``apply_retention_policy``.

Why a pure function
-------------------
The retention controller (which deletes Snapshot objects), the CLI's ``--dry-run`` (which
only prints what would be deleted) and the tests must agree exactly on which snapshots a
``RetentionPolicy`` keeps. So the decision takes plain data in (the policy spec, the
snapshots, the current time) and returns plain data out (one ``Decision`` per snapshot with
human-readable reasons); it reads no clock, cluster or repository itself.

Semantics
---------
1. **Order.** Snapshots are sorted newest first by instant (``time`` compared as an absolute
   point in time). Snapshots with equal instants are ordered by ``name`` ascending, so the
   result never depends on the input order. (restic sorts equal times stably in the order it
   loaded them, which is not something a caller can control; avoid equal times when
   comparing with restic.) The returned decisions follow this order.
2. **maxRetentionPeriod.** If set, ``cutoff = now - period`` where the period is parsed by
   ``parse_retention_period`` (month = 30 days, year = 365 days, as KubeStash). A snapshot
   with ``time < cutoff`` is removed regardless of every other rule, failed or successful
   (reason ``removed: older than maxRetentionPeriod <period>``). A snapshot exactly at the
   cutoff is *not* older and stays subject to the rules below. Because the list is walked
   newest first, all snapshots within the period are visited before any older one, so it
   makes no difference whether the keep rules below "see" the expired snapshots: they never
   consume a rule's count before a younger snapshot does.
3. **Successful snapshots** (``succeeded=True``) follow restic 0.14's ``forget`` policy for the
   shared options ``last``, ``hourly``, ``daily``, ``weekly``, ``monthly``, ``yearly``
   (``--keep-last`` ... ``--keep-yearly``). A rule is active when its count is set and
   greater than 0 (restic's flags default to 0 = off). For each active rule, walk the
   successful snapshots newest first; a snapshot is kept by the rule when its *bucket value*
   differs from the bucket value of the last snapshot that rule kept, and the rule's
   remaining count is then decreased, until it reaches 0. Bucket values:

   * ``last``: every snapshot is its own bucket, so the newest ``last`` snapshots are kept;
   * ``hourly``: (year, month, day, hour); ``daily``: (year, month, day);
   * ``weekly``: (ISO year, ISO week), so 2026-12-31 is in 2026-W53 and 2027-01-01 too;
   * ``monthly``: (year, month); ``yearly``: year.

   A snapshot is kept if any rule keeps it; all rules that keep it are listed as reasons.
   Otherwise it is removed (``removed: not selected by any rule``). If no rule is active
   (``successfulSnapshots`` absent, empty, or all counts 0) every successful snapshot within
   the period is kept, as restic keeps everything for an empty policy. restic 0.14 has no
   "keep the oldest snapshot additionally" rule (added in 0.17), so neither has this.
   Failed snapshots are invisible to these rules: they never fill a bucket or use a count.
4. **Failed snapshots** (``succeeded=False``): the newest ``failedSnapshots.last`` of them
   (default 1 when ``failedSnapshots`` is absent; 0 removes all) are kept, the rest removed.
5. **Time zones.** restic computes bucket values from a snapshot time in the UTC offset the
   time was recorded with (the ``time`` in ``restic snapshots --json``, i.e. the local zone of
   the process that ran ``restic backup``), not in UTC and not in the zone of the process
   running ``forget``. Here every datetime must be tz-aware (naive ones raise ``ValueError``)
   and bucket values are the wall-clock fields of the datetime *in its own tzinfo*, without
   conversion. So to agree with restic, give each snapshot the offset restic recorded, e.g.
   ``datetime.fromisoformat(snapshot["time"])``; a ``zoneinfo`` time gives the same fields as
   its fixed offset at that instant, so DST changes need no special handling. The same
   instant expressed in different zones can therefore fall into different buckets (as in
   restic). ``now`` and the cutoff are compared as instants.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from kubestash.api.durations import parse_retention_period
from kubestash.api.storage import RetentionPolicySpec

__all__ = ["DEFAULT_FAILED_LAST", "Decision", "SnapshotRecord", "apply_retention_policy"]

DEFAULT_FAILED_LAST = 1
"""``failedSnapshots.last`` when the policy has no ``failedSnapshots``."""


@dataclass(frozen=True)
class SnapshotRecord:
    """What retention needs to know about one snapshot. ``time`` must be tz-aware."""

    name: str
    time: datetime
    succeeded: bool


@dataclass(frozen=True)
class Decision:
    """Whether a snapshot is kept, and why (``kept: ...`` or ``removed: ...`` strings)."""

    snapshot: SnapshotRecord
    keep: bool
    reasons: tuple[str, ...]


def _hour(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}"


def _day(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}"


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _month(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _year(t: datetime) -> str:
    return f"{t.year:04d}"


# Rule name -> bucket label of a time (the label is the bucket value and the reason text).
_BUCKET_RULES: tuple[tuple[str, Callable[[datetime], str]], ...] = (
    ("hourly", _hour),
    ("daily", _day),
    ("weekly", _week),
    ("monthly", _month),
    ("yearly", _year),
)


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be a timezone-aware datetime, got naive {value.isoformat()}")


def _sorted_newest_first(snapshots: Iterable[SnapshotRecord]) -> list[SnapshotRecord]:
    by_name = sorted(snapshots, key=lambda s: s.name)
    # list.sort is stable also with reverse=True: equal instants keep name order.
    return sorted(by_name, key=lambda s: s.time, reverse=True)


def apply_retention_policy(
    spec: RetentionPolicySpec, snapshots: Iterable[SnapshotRecord], now: datetime
) -> list[Decision]:
    """Decide keep/remove for every snapshot under ``spec`` at ``now``; newest first.

    See the module docstring for the exact semantics. Raises ``ValueError`` for naive
    datetimes, duplicate snapshot names or an invalid ``maxRetentionPeriod``.
    """
    _require_aware(now, "now")
    ordered = _sorted_newest_first(snapshots)
    seen: set[str] = set()
    for snap in ordered:
        _require_aware(snap.time, f"time of snapshot {snap.name!r}")
        if snap.name in seen:
            raise ValueError(f"duplicate snapshot name {snap.name!r}")
        seen.add(snap.name)

    reasons: dict[str, list[str]] = {s.name: [] for s in ordered}
    expired: set[str] = set()
    if spec.max_retention_period is not None:
        period = spec.max_retention_period
        cutoff = now - parse_retention_period(period).to_timedelta()
        for snap in ordered:
            if snap.time < cutoff:
                expired.add(snap.name)
                reasons[snap.name].append(f"removed: older than maxRetentionPeriod {period}")

    live = [s for s in ordered if s.name not in expired]
    successful = [s for s in live if s.succeeded]
    failed = [s for s in live if not s.succeeded]

    keep_policy = spec.successful_snapshots
    last = keep_policy.last if keep_policy is not None else None
    bucket_counts: list[tuple[str, Callable[[datetime], str], int]] = []
    if keep_policy is not None:
        for rule, bucket in _BUCKET_RULES:
            count = getattr(keep_policy, rule)
            if count:
                bucket_counts.append((rule, bucket, count))

    if not last and not bucket_counts:
        for snap in successful:
            reasons[snap.name].append("kept: no successfulSnapshots rules")
    else:
        if last:
            for index, snap in enumerate(successful[:last], start=1):
                reasons[snap.name].append(f"kept: last {index}/{last}")
        for rule, bucket, count in bucket_counts:
            remaining = count
            previous: str | None = None
            for snap in successful:
                if remaining == 0:
                    break
                label = bucket(snap.time)
                if label != previous:
                    previous = label
                    remaining -= 1
                    reasons[snap.name].append(f"kept: {rule} {label}")
        for snap in successful:
            if not reasons[snap.name]:
                reasons[snap.name].append("removed: not selected by any rule")

    failed_last = spec.failed_snapshots.last if spec.failed_snapshots is not None else DEFAULT_FAILED_LAST
    for index, snap in enumerate(failed, start=1):
        if index <= failed_last:
            reasons[snap.name].append(f"kept: failed last {index}/{failed_last}")
        else:
            reasons[snap.name].append(f"removed: failed beyond last {failed_last}")

    return [
        Decision(snapshot=s, keep=reasons[s.name][0].startswith("kept:"), reasons=tuple(reasons[s.name]))
        for s in ordered
    ]
