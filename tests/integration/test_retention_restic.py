"""Oracle test: ``apply_retention_policy`` agrees with ``restic forget`` (restic 0.14, Debian).

One restic repository per module holds snapshots of three hosts, each host one group
(``forget --group-by host``), each group a scenario:

* ``utc``: made with ``TZ=UTC`` around the year ends 2025/26 and 2026/27 (ISO 2026-W01
  starting 2025-12-29, the 53-week ISO year 2026), month ends, several per hour/day;
* ``berlin``: made with ``TZ=Europe/Berlin`` around both 2026 DST changes;
* ``mixed``: close instants around 2026-06-30/07-01, each made in a different ``TZ``.

Our ``SnapshotRecord`` times are parsed from ``restic snapshots --json`` so both sides see the
same instants and UTC offsets. ``forget`` itself runs with ``TZ=Asia/Kolkata`` to show that
the zone of the process running forget does not matter, only the recorded offset does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from kubestash.api.retention import SnapshotRecord, apply_retention_policy
from kubestash.api.storage import RetentionPolicySpec, SuccessfulSnapshotsKeepPolicy
from restic_helpers import cheapen_key

RESTIC_MISSING = (
    "the `restic` binary is not on PATH; scripts/test.sh installs it (apt-get install -y restic), "
    "or install it yourself before running this test"
)

# host -> [(TZ of the `restic backup` process, local --time)]
PLAN: dict[str, list[tuple[str, str]]] = {
    "utc": [
        ("UTC", "2025-12-28 10:00:00"),  # 2025-W52
        ("UTC", "2025-12-29 09:00:00"),  # 2026-W01, year 2025
        ("UTC", "2025-12-31 23:30:00"),
        ("UTC", "2026-01-01 00:30:00"),
        ("UTC", "2026-01-31 12:00:00"),
        ("UTC", "2026-02-01 00:10:00"),
        ("UTC", "2026-12-27 23:00:00"),  # 2026-W52
        ("UTC", "2026-12-28 00:30:00"),  # 2026-W53
        ("UTC", "2027-01-01 01:00:00"),  # 2026-W53, year 2027
        ("UTC", "2027-01-03 20:00:00"),  # 2026-W53
        ("UTC", "2027-01-04 08:15:00"),  # 2027-W01
        ("UTC", "2027-01-04 08:45:00"),
        ("UTC", "2027-01-04 09:05:00"),
    ],
    "berlin": [
        ("Europe/Berlin", "2026-03-28 23:30:00"),
        ("Europe/Berlin", "2026-03-29 00:30:00"),
        ("Europe/Berlin", "2026-03-29 01:30:00"),
        ("Europe/Berlin", "2026-03-29 03:30:00"),  # CEST from 02:00
        ("Europe/Berlin", "2026-10-24 23:30:00"),
        ("Europe/Berlin", "2026-10-25 00:30:00"),
        ("Europe/Berlin", "2026-10-25 01:30:00"),
        ("Europe/Berlin", "2026-10-25 02:30:00"),  # ambiguous wall time; restic picks one
        ("Europe/Berlin", "2026-10-25 03:30:00"),  # CET
    ],
    "mixed": [
        ("UTC", "2026-06-30 23:30:00"),  # 23:30Z
        ("Asia/Tokyo", "2026-07-01 08:45:00"),  # 23:45Z the day before
        ("America/New_York", "2026-06-30 20:00:00"),  # 00:00Z the day after
        ("Pacific/Kiritimati", "2026-07-01 13:10:00"),  # 23:10Z the day before
        ("UTC", "2026-07-01 00:20:00"),
    ],
}

POLICIES: list[dict[str, int]] = [
    {"last": 3},
    {"hourly": 4},
    {"hourly": 100},
    {"daily": 3},
    {"daily": 30},
    {"weekly": 3},
    {"weekly": 5},
    {"monthly": 3},
    {"yearly": 3},
    {"last": 1, "daily": 2, "weekly": 2, "monthly": 2, "yearly": 5},
    {"hourly": 2, "weekly": 3},
]


WORKERS = max(2, min(4, os.cpu_count() or 2))


@dataclass(frozen=True)
class Repo:
    env: dict[str, str]
    records: dict[str, list[SnapshotRecord]]  # host -> records; name = restic snapshot id


def _restic(args: Sequence[str], env: dict[str, str], tz: str) -> str:
    proc = subprocess.run(
        ["restic", *args], env={**env, "TZ": tz}, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    if shutil.which("restic") is None:
        pytest.fail(RESTIC_MISSING)
    base: Path = tmp_path_factory.mktemp("restic")
    data = base / "data"
    data.mkdir()
    (data / "file.txt").write_text("retention oracle\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(
        RESTIC_REPOSITORY=str(base / "repo"),
        RESTIC_PASSWORD="retention-oracle",
        RESTIC_CACHE_DIR=str(base / "cache"),
    )
    _restic(["init", "--quiet"], env, "UTC")
    cheapen_key(base / "repo", env["RESTIC_PASSWORD"])  # each of the ~40 restic runs derives the key first

    def backup(job: tuple[str, str, str]) -> str:
        host, tz, when = job
        return _restic(["backup", "--quiet", "--time", when, "--host", host, "--tag", "t", str(data)], env, tz)

    jobs = [(host, tz, when) for host, entries in PLAN.items() for tz, when in entries]
    # backup takes a shared lock, so concurrent backups are fine.
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        list(pool.map(backup, jobs))

    listed: list[dict[str, Any]] = json.loads(_restic(["snapshots", "--json"], env, "UTC"))
    records: dict[str, list[SnapshotRecord]] = {host: [] for host in PLAN}
    for snap in listed:
        records[snap["hostname"]].append(SnapshotRecord(snap["id"], datetime.fromisoformat(snap["time"]), True))
    assert {host: len(recs) for host, recs in records.items()} == {host: len(e) for host, e in PLAN.items()}
    return Repo(env=env, records=records)


def _restic_keep(repo: Repo, policy: dict[str, int]) -> dict[str, set[str]]:
    flags = [arg for rule, count in policy.items() for arg in (f"--keep-{rule}", str(count))]
    out = _restic(
        ["--no-lock", "forget", "--dry-run", "--json", "--group-by", "host", *flags], repo.env, "Asia/Kolkata"
    )
    groups: list[dict[str, Any]] = json.loads(out)
    keep: dict[str, set[str]] = {}
    for group in groups:
        kept = {s["id"] for s in group["keep"] or []}
        removed = {s["id"] for s in group["remove"] or []}
        assert kept | removed == {r.name for r in repo.records[group["host"]]}
        keep[group["host"]] = kept
    assert set(keep) == set(PLAN)
    return keep


@pytest.fixture(scope="module")
def restic_keep(repo: Repo) -> list[dict[str, set[str]]]:
    """restic's keep set per host for every policy in POLICIES (same order), computed concurrently."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(lambda policy: _restic_keep(repo, policy), POLICIES))


def _our_keep(records: list[SnapshotRecord], policy: dict[str, int]) -> set[str]:
    spec = RetentionPolicySpec(successful_snapshots=SuccessfulSnapshotsKeepPolicy(**policy))
    return {d.snapshot.name for d in apply_retention_policy(spec, records, datetime.now(UTC)) if d.keep}


def _describe(records: list[SnapshotRecord], names: set[str]) -> list[str]:
    return sorted(r.time.isoformat() for r in records if r.name in names)


@pytest.mark.parametrize(
    "index", range(len(POLICIES)), ids=["-".join(f"{k}{v}" for k, v in p.items()) for p in POLICIES]
)
def test_keep_set_matches_restic_forget(repo: Repo, restic_keep: list[dict[str, set[str]]], index: int) -> None:
    policy = POLICIES[index]
    for host, records in repo.records.items():
        ours = _our_keep(records, policy)
        theirs = restic_keep[index][host]
        assert _describe(records, ours) == _describe(records, theirs), f"host {host}, policy {policy}"


def test_oracle_is_sensitive_to_recorded_offsets(repo: Repo) -> None:
    """Guard against a vacuous oracle: policies remove snapshots, and buckets differ from UTC ones."""
    removed_any = False
    differs_from_utc = False
    for policy in POLICIES:
        for host, records in repo.records.items():
            ours = _our_keep(records, policy)
            removed_any |= ours != {r.name for r in records}
            as_utc = [SnapshotRecord(r.name, r.time.astimezone(UTC), r.succeeded) for r in records]
            differs_from_utc |= host != "utc" and _our_keep(as_utc, policy) != ours
    assert removed_any
    assert differs_from_utc
    offsets = {r.time.utcoffset() for recs in repo.records.values() for r in recs}
    assert len(offsets) >= 5, offsets
