"""``kubestash trigger --wait``: follow BackupSessions to their final phase, with restic's progress.

The BackupSessions are polled every 0.05 s on :mod:`kubestash.cli.kubeapi`'s kept-alive connection, so a final
phase is seen at most 0.05 s (plus one request) after it is written: a GET there costs about 0.5 ms, so this
is about 1% of a core for the API server, and the process exits 0.04-0.07 s after the phase is written
(measured, including the write). The Snapshots a running session's status lists are read only for progress
lines -- at most every 0.25 s until a line is shown, then once a second, as lines are shown at most once a
second -- and, at the end, for the reasons of a failure. Polling rather than a watch keeps one simple loop over
two kinds with no stream to resume.
Importable without click or lightkube; ``kubestash.cli.triggering`` imports it once the sessions exist.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from kubestash.api.sessions import CORE_GROUP
from kubestash.api.sizes import human_size, parse_size
from kubestash.cli.kubeapi import ApiFailure, KubeApi, object_path
from kubestash.cli.triggering import Echo, Failure, echo

FINAL_PHASES = ("Succeeded", "Failed", "Skipped")
STORAGE_GROUP = "storage.kubestash.com"
POLL_INTERVAL = 0.05
"""Seconds between reads of each BackupSession being waited for."""
SNAPSHOT_INTERVAL = 0.25
"""Seconds between reads of a running session's Snapshots while no progress line has been shown."""


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip().rstrip("%s").strip()
        try:
            return float(text)
        except ValueError:
            return None
    return None


def _percent(value: Any) -> float | None:
    """``percentDone``: ``"42.5%"`` or a number; a plain number up to 1 is a fraction, as restic reports it."""
    number = _number(value)
    if number is None:
        return None
    if isinstance(value, str) and value.strip().endswith("%"):
        return number
    return number * 100 if number <= 1 else number


def _bytes(value: Any) -> int | None:
    """A size as KubeStash writes it (``12.222 MiB``), a rate (``1.2 MiB/s``) or a plain number of bytes."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    text = str(value).strip().removesuffix("/s").strip()
    try:
        return int(float(text))
    except ValueError:
        return parse_size(text) or None


def format_seconds(seconds: float) -> str:
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def format_progress(progress: Mapping[str, Any]) -> str:
    """``12/40 files, 4.000 MiB/10.000 MiB (40.0%), 1.000 MiB/s, ETA 6s`` -- whatever the status allows."""
    parts = []
    files_done, total_files = progress.get("filesDone"), progress.get("totalFiles")
    if files_done is not None or total_files is not None:
        parts.append(f"{files_done or 0}/{total_files}" if total_files is not None else f"{files_done}")
        parts[-1] += " files"
    done, total = _bytes(progress.get("backupDone")), _bytes(progress.get("total"))
    percent = _percent(progress.get("percentDone"))
    if percent is None and done is not None and total:
        percent = 100.0 * done / total
    size = ""
    if done is not None or total is not None:
        size = human_size(done or 0) + (f"/{human_size(total)}" if total is not None else "")
    if percent is not None:
        size = f"{size} ({percent:.1f}%)".strip()
    if size:
        parts.append(size)
    elapsed = _number(progress.get("secondsElapsed"))
    speed = _bytes(progress.get("speed"))
    if speed is None and done and elapsed:
        speed = int(done / elapsed)
    if speed:
        parts.append(f"{human_size(speed)}/s")
    eta: float | None = None
    if done is not None and total is not None and speed:
        eta = max(total - done, 0) / speed
    elif percent and elapsed:
        eta = elapsed * (100 - percent) / percent
    if eta is not None and (percent is None or percent < 100):
        parts.append(f"ETA {format_seconds(eta)}")
    if elapsed is not None:
        parts.append(f"elapsed {format_seconds(elapsed)}")
    return ", ".join(parts) or "no progress reported yet"


def progress_lines(session: str, snapshots: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per restic run that reports progress, in each Snapshot of the BackupSession."""
    lines = []
    for snap in sorted(snapshots, key=lambda s: str((s.get("metadata") or {}).get("name"))):
        repo = (snap.get("spec") or {}).get("repository") or (snap.get("metadata") or {}).get("name")
        components = (snap.get("status") or {}).get("components") or {}
        for component in sorted(components):
            stats = components[component].get("resticStats") or []
            for i, entry in enumerate(stats):
                progress = (entry or {}).get("progress")
                if not progress:
                    continue
                path = (entry.get("summary") or {}).get("hostPath")
                where = f"{repo}/{component}" + (f"[{path or i}]" if len(stats) > 1 else "")
                lines.append(f"{session} {where}: {format_progress(progress)}")
    return lines


def failure_reasons(session: Mapping[str, Any], snapshots: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why a BackupSession did not succeed: failed conditions, retention errors, component errors."""
    status = session.get("status") or {}
    reasons = [_condition_text(c) for c in status.get("conditions") or [] if _is_bad(c)]
    reasons += [
        f"retention policy {(r.get('ref') or {}).get('name')} on {r.get('repository')}: {r.get('error') or r['phase']}"
        for r in status.get("retentionPolicy") or []
        if r.get("phase") == "FailedToApply"
    ]
    for snap in snapshots:
        name = (snap.get("metadata") or {}).get("name")
        snap_status = snap.get("status") or {}
        reasons += [f"snapshot {name}: {_condition_text(c)}" for c in snap_status.get("conditions") or [] if _is_bad(c)]
        for component, comp in sorted((snap_status.get("components") or {}).items()):
            if comp.get("phase") == "Failed" or comp.get("error"):
                reasons.append(f"snapshot {name} component {component}: {comp.get('error') or 'Failed'}")
    return reasons


_BAD_WHEN_TRUE = frozenset({"BackupSkipped", "SnapshotCleanupIncomplete", "BackupIncomplete"})


def _is_bad(condition: Mapping[str, Any]) -> bool:
    wanted_true = condition.get("type") in _BAD_WHEN_TRUE
    return str(condition.get("status")) == ("True" if wanted_true else "False")


def _condition_text(condition: Mapping[str, Any]) -> str:
    text = f"{condition.get('type')}"
    if condition.get("reason"):
        text += f" ({condition['reason']})"
    if condition.get("message"):
        text += f": {condition['message']}"
    return text


# ------------------------------------------------------------------ --wait
def wait_for_sessions(
    api: KubeApi,
    namespace: str,
    names: Sequence[str],
    *,
    timeout: float = 0,
    interval: float = POLL_INTERVAL,
    out: Echo = echo,
) -> bool:
    """Poll until every BackupSession is Succeeded, Failed or Skipped; True if all Succeeded.

    Progress lines are printed only when they change and at most once a second per session.
    """
    started = time.monotonic()
    pending = list(names)
    shown_phase: dict[str, str] = {}
    shown_progress: dict[str, tuple[float, list[str]]] = {}
    snapshots_read: dict[str, float] = {}
    all_ok = True
    while pending:
        round_started = time.monotonic()
        for name in list(pending):
            try:
                session = api.get(object_path(CORE_GROUP, "backupsessions", namespace, name)) or {}
            except ApiFailure as exc:
                if exc.code != 404:
                    raise
                out(f"{name}: deleted before it finished")
                pending.remove(name)
                all_ok = False
                continue
            status = session.get("status") or {}
            phase = str(status.get("phase") or "Pending")
            if phase in FINAL_PHASES:
                pending.remove(name)
                all_ok &= phase == "Succeeded"
                mine = [] if phase == "Succeeded" else _snapshots(api, namespace, status)
                _report_final(name, phase, status, time.monotonic() - started, session, mine, out)
                continue
            if shown_phase.get(name) != phase:
                shown_phase[name] = phase
                out(f"{name}: {phase}")
            now = time.monotonic()
            last_time, last_lines = shown_progress.get(name, (0.0, []))
            due = now - last_time >= 1.0 and now - snapshots_read.get(name, 0.0) >= SNAPSHOT_INTERVAL
            if status.get("snapshots") and due:
                snapshots_read[name] = now
                lines = progress_lines(name, _snapshots(api, namespace, status))
                if lines and lines != last_lines:
                    shown_progress[name] = (now, lines)
                    for line in lines:
                        out(line)
        if not pending:
            break
        if timeout and time.monotonic() - started > timeout:
            raise Failure(f"timed out after {format_seconds(timeout)} waiting for {', '.join(pending)}")
        time.sleep(max(interval - (time.monotonic() - round_started), 0.01))
    return all_ok


def _snapshots(api: KubeApi, namespace: str, status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Snapshots a BackupSession's status lists (one per repository), skipping any already gone."""
    found = []
    for ref in status.get("snapshots") or []:
        try:
            snap = api.get(object_path(STORAGE_GROUP, "snapshots", namespace, str(ref.get("name"))))
        except ApiFailure as exc:
            if exc.code != 404:
                raise
            continue
        if isinstance(snap, dict):
            found.append(snap)
    return found


def _report_final(
    name: str,
    phase: str,
    status: Mapping[str, Any],
    waited: float,
    session: Mapping[str, Any],
    snapshots: Sequence[Mapping[str, Any]],
    out: Echo,
) -> None:
    duration = status.get("duration") or format_seconds(waited)
    out(f"{name}: {phase} in {duration}")
    if phase != "Succeeded":
        for reason in failure_reasons(session, snapshots):
            out(f"  {reason}")
