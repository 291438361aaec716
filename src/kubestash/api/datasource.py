"""Which Snapshot a RestoreSession restores: a name, ``latest``, or a point in time (reference §3.7).

Pure: the controller passes what its cache knows. Only Succeeded snapshots are eligible for ``latest`` and
point-in-time recovery (a failed one holds no complete data); a snapshot named explicitly must have
Succeeded too, and must belong to ``dataSource.repository`` when that is given. Snapshot time is
``status.snapshotTime`` (when the backup was taken), else the object's creation time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from kubestash.api.conditions import parse_time, rfc3339
from kubestash.api.restore import RestoreDataSource

LATEST = "latest"


class NoSnapshot(Exception):
    """No Snapshot satisfies the data source; the message says why in the user's terms."""


@dataclass(frozen=True)
class Candidate:
    name: str
    repository: str
    phase: str
    time: datetime | None


def choose_snapshot(source: RestoreDataSource, namespace: str, candidates: Sequence[Candidate]) -> Candidate:
    repo = source.repository
    mine = [c for c in candidates if not repo or c.repository == repo]
    where = f"repository {namespace}/{repo}" if repo else f"namespace {namespace}"
    if source.pitr is not None:
        target = parse_time(source.pitr.target_time)
        if target is None:
            raise NoSnapshot(f"pitr.targetTime {source.pitr.target_time!r} is not a time")
        exclusive = bool(source.pitr.exclusive)
        eligible = [
            c for c in mine if c.phase == "Succeeded" and c.time is not None and _eligible(c.time, target, exclusive)
        ]
        if not eligible:
            relation = "before" if exclusive else "at or before"
            raise NoSnapshot(f"no Succeeded Snapshot of {where} was taken {relation} {rfc3339(target)}")
        return max(eligible, key=_order)
    if source.snapshot == LATEST:
        succeeded = [c for c in mine if c.phase == "Succeeded"]
        if not succeeded:
            raise NoSnapshot(f"{where} has no Succeeded Snapshot")
        return max(succeeded, key=_order)
    named = next((c for c in candidates if c.name == source.snapshot), None)
    if named is None:
        raise NoSnapshot(f"Snapshot {namespace}/{source.snapshot} not found")
    if repo and named.repository != repo:
        raise NoSnapshot(f"Snapshot {namespace}/{named.name} belongs to repository {named.repository}, not {repo}")
    if named.phase != "Succeeded":
        raise NoSnapshot(f"Snapshot {namespace}/{named.name} is {named.phase or 'not finished'}, not Succeeded")
    return named


def _order(c: Candidate) -> tuple[float, str]:
    return (c.time.timestamp() if c.time else 0.0, c.name)


def _eligible(taken: datetime, target: datetime, exclusive: bool) -> bool:
    return taken < target or (taken == target and not exclusive)
