"""``kubestash download``: restore a Snapshot's components to local disk, as KubeStash's CLI does.

Why: a Snapshot is the unit users pick backups by, but its data lives in one restic repository per
component (``<Repository path>/repository/v1/<session>/<component>``), one restic snapshot per backed-up
path. Getting a file back should not need a RestoreSession, a workload or restic skills.

What: the Snapshot's (selected) components are restored below ``<destination>/<snapshot>/<component>/``,
each backed-up path at its pod path below that (``/source/data`` → ``<component>/source/data``), which is
the layout KubeStash's ``download`` produces (restic restores pod paths below the target). KubeStash runs
restic in Docker or an accessor pod; here restic runs on this machine with the Repository's storage and
encryption Secrets (the same route ``unlock`` and ``password`` take).

Placement is all or nothing per component: a failing component leaves no directory behind that it
created (restoring over an existing tree replaces the files the snapshot holds and keeps the others).
Progress goes to stderr, one result line per component to stdout; no password or Secret value is printed.
"""

from __future__ import annotations

import asyncio
import posixpath
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import click

from kubestash.api.sizes import human_size
from kubestash.cli.backup import (
    CliError,
    Connection,
    UsageFailure,
    api_errors,
    connect,
    connection_options,
    failure_reasons,
    format_progress,
    format_seconds,
)
from kubestash.engine.base import Engine, EngineError, Progress, ProgressCallback
from kubestash.engine.select import configured_engine
from kubestash.tasks.access import AccessError, RepositoryAccess, get_object, open_repository
from kubestash.tasks.placement import restore_into, scope_patterns

PIPE_INTERVAL = 5.0
"""Seconds between progress lines when stderr is not a terminal."""
TTY_INTERVAL = 0.2


# ------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Entry:
    """One restic snapshot of a component and where its backed-up path's contents land."""

    component: str
    component_path: str
    snapshot_id: str
    host_path: str
    destination: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]


@dataclass(frozen=True)
class ComponentPlan:
    name: str
    directory: Path
    entries: tuple[Entry, ...]


def split_values(values: Sequence[str] | None) -> list[str]:
    """Repeated and/or comma-separated option values, trimmed, empty ones dropped, order kept."""
    out: list[str] = []
    for value in values or ():
        out += [v.strip() for v in value.split(",") if v.strip()]
    return list(dict.fromkeys(out))


def _where(snapshot: Mapping[str, Any]) -> str:
    meta = snapshot.get("metadata") or {}
    return f"Snapshot {meta.get('namespace')}/{meta.get('name')}"


def select_components(snapshot: Mapping[str, Any], wanted: Sequence[str]) -> list[str]:
    """All the Snapshot's components, or the ``wanted`` ones (unknown ones are a usage error listing the known)."""
    known = sorted(((snapshot.get("status") or {}).get("components") or {}).keys())
    if not wanted:
        if not known:
            raise CliError(f"{_where(snapshot)} has no components")
        return known
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise UsageFailure(
            f"{_where(snapshot)} has no component {', '.join(unknown)}; "
            f"its components are: {', '.join(known) or '(none)'}"
        )
    return list(wanted)


def check_succeeded(snapshot: Mapping[str, Any], components: Sequence[str]) -> None:
    """Refuse a Snapshot, or a selected component, that did not succeed (its data may be missing or partial)."""
    status = snapshot.get("status") or {}
    phase = status.get("phase") or "unset"
    if phase != "Succeeded":
        reasons = failure_reasons({}, [snapshot])
        why = f": {'; '.join(reasons)}" if reasons else ""
        raise CliError(f"{_where(snapshot)} is not Succeeded (phase {phase}){why}")
    for name in components:
        comp = status["components"][name] or {}
        if comp.get("phase") != "Succeeded":
            error = f": {comp['error']}" if comp.get("error") else ""
            raise CliError(
                f"{_where(snapshot)} component {name} is not Succeeded (phase {comp.get('phase') or 'unset'}){error}"
            )


def _safe_component(snapshot: Mapping[str, Any], name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise CliError(f"{_where(snapshot)} has a component name unusable as a directory: {name!r}")
    return name


def _host_path(summary: Mapping[str, Any]) -> str:
    """The backed-up pod path, normalized and absolute (``..`` cannot climb above ``/``)."""
    return posixpath.normpath("/" + str(summary.get("hostPath") or "/").lstrip("/"))


def plan_download(
    snapshot: Mapping[str, Any],
    components: Sequence[str],
    destination: Path,
    include: Sequence[str],
    exclude: Sequence[str],
) -> list[ComponentPlan]:
    """What to restore where: ``<destination>/<snapshot>/<component>/<hostPath>`` per restic snapshot.

    Patterns are written against pod paths; an entry that an include list does not concern is left out
    (a component may end up with no entries: nothing of it was asked for).
    """
    name = str((snapshot.get("metadata") or {}).get("name"))
    root = destination / name
    status_components = (snapshot.get("status") or {}).get("components") or {}
    plans = []
    for component in components:
        comp = status_components.get(component) or {}
        directory = root / _safe_component(snapshot, component)
        path = str(comp.get("path") or "").strip("/")
        if not path:
            raise CliError(f"{_where(snapshot)} component {component} has no repository path (status.components.path)")
        stats = [s for s in comp.get("resticStats") or [] if ((s or {}).get("summary") or {}).get("id")]
        if not stats:
            raise CliError(f"{_where(snapshot)} component {component} holds no restic snapshot to download")
        entries = []
        for stat in stats:
            summary = stat["summary"]
            host_path = _host_path(summary)
            scoped_include = scope_patterns(include, host_path)
            if scoped_include is None:
                continue
            relative = host_path.lstrip("/")
            entries.append(
                Entry(
                    component=component,
                    component_path=path,
                    snapshot_id=str(summary["id"]),
                    host_path=host_path,
                    destination=directory / relative if relative else directory,
                    include=tuple(scoped_include),
                    exclude=tuple(scope_patterns(exclude, host_path) or ()),
                )
            )
        plans.append(ComponentPlan(component, directory, tuple(entries)))
    if include and not any(p.entries for p in plans):
        paths = sorted(
            {
                _host_path((s or {}).get("summary") or {})
                for c in components
                for s in (status_components.get(c) or {}).get("resticStats") or []
            }
        )
        raise UsageFailure(
            f"--include {', '.join(include)} concerns none of the backed-up paths: {', '.join(paths) or '(none)'}"
        )
    return plans


# ------------------------------------------------------------------ progress
class ProgressLine:
    """One progress line on stderr: rewritten in place on a terminal, else a line every few seconds."""

    def __init__(self, stream: TextIO, *, tty: bool | None = None) -> None:
        self.stream = stream
        self.tty = stream.isatty() if tty is None else tty
        self.interval = TTY_INTERVAL if self.tty else PIPE_INTERVAL
        self.width = 0
        self.last = 0.0
        self.started = 0.0

    def start(self) -> None:
        self.started = self.last = time.monotonic()

    def reporter(self, label: str) -> ProgressCallback:
        return lambda progress: self.update(label, progress)

    def update(self, label: str, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        self.last = now
        text = f"{label}: {format_progress(_progress_fields(progress))}"
        if self.tty:
            self.stream.write("\r" + text.ljust(self.width))
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
            self.width = 0


def _progress_fields(progress: Progress) -> dict[str, Any]:
    """The engine's progress in the field names :func:`format_progress` reads (KubeStash's status names)."""
    return {
        "filesDone": progress.files_done,
        "totalFiles": progress.total_files,
        "backupDone": progress.bytes_done,
        "total": progress.total_bytes,
        "percentDone": progress.percent_done,
        "secondsElapsed": progress.seconds_elapsed,
        "speed": progress.bytes_per_second,
    }


def format_duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_seconds(seconds)


# ------------------------------------------------------------------ restore
@dataclass(frozen=True)
class Outcome:
    component: str
    text: str
    ok: bool = True


def _first_missing(path: Path) -> Path | None:
    """The topmost directory of ``path``'s chain that does not exist yet (what a restore there creates)."""
    missing = None
    while not path.exists() and not path.is_symlink():
        missing, parent = path, path.parent
        if parent == path:
            break
        path = parent
    return missing


async def restore_component(
    engine: Engine, access: RepositoryAccess, plan: ComponentPlan, scratch: Path, line: ProgressLine
) -> Outcome:
    """Restore every entry of one component; on failure remove the directories this component created."""
    if not plan.entries:
        return Outcome(plan.name, f"{plan.name}: skipped, no --include pattern concerns its paths")
    created = _first_missing(plan.directory)
    files = size = 0
    started = time.monotonic()
    try:
        for i, entry in enumerate(plan.entries):
            before = _first_missing(entry.destination)
            label = plan.name + (f" {entry.host_path}" if len(plan.entries) > 1 else "")
            try:
                target = access.target(entry.component_path, scratch / f"{plan.name}-{i}", enable_cache=False)
                line.start()
                summary = await restore_into(
                    engine,
                    target,
                    entry.snapshot_id,
                    entry.destination,
                    include=entry.include,
                    exclude=entry.exclude,
                    on_progress=line.reporter(label),
                )
            except BaseException:
                line.clear()
                if before is not None:
                    shutil.rmtree(before, ignore_errors=True)
                raise
            line.clear()
            files += summary.files_restored
            size += summary.bytes_restored
    except BaseException as exc:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(exc, AccessError):
            return Outcome(plan.name, f"{plan.name}: {exc}", ok=False)
        if isinstance(exc, EngineError):
            return Outcome(plan.name, f"{plan.name}: {exc.message}", ok=False)
        if isinstance(exc, OSError):
            return Outcome(plan.name, f"{plan.name}: {exc.strerror or exc}: {exc.filename}", ok=False)
        raise
    where = ", ".join(str(e.destination) for e in plan.entries)
    took = format_duration(time.monotonic() - started)
    return Outcome(plan.name, f"{plan.name}: {files} files, {human_size(size)} in {took} -> {where}")


async def _download(
    conn: Connection,
    name: str,
    destination: Path,
    wanted: Sequence[str],
    include: Sequence[str],
    exclude: Sequence[str],
    engine: Engine,
    line: ProgressLine,
) -> list[Outcome]:
    client = conn.async_client()
    try:
        snapshot = await get_object(client, "Snapshot", name, conn.namespace)
        components = select_components(snapshot, wanted)
        check_succeeded(snapshot, components)
        plans = plan_download(snapshot, components, destination, include, exclude)
        repository = str((snapshot.get("spec") or {}).get("repository") or "")
        if not repository:
            raise CliError(f"Snapshot {conn.namespace}/{name} names no repository (spec.repository)")
        access = await open_repository(client, conn.namespace, repository)
    except AccessError as exc:
        raise CliError(str(exc)) from None
    finally:
        await client.close()
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="kubestash-download-") as scratch:
        for plan in plans:
            outcome = await restore_component(engine, access, plan, Path(scratch), line)
            if outcome.ok:
                click.echo(outcome.text)
            else:
                click.echo(f"Error: {outcome.text}", err=True)
            outcomes.append(outcome)
    return outcomes


@click.command()
@click.argument("snapshot")
@click.option(
    "--destination",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory to download into; each component lands in <destination>/<snapshot>/<component>/ "
    "(default: the current directory).",
)
@click.option("--components", default=None, help="Comma-separated components to download (default: all).")
@click.option(
    "--include",
    "includes",
    multiple=True,
    help="Restore only matching paths (repeatable or comma-separated; absolute ones are pod paths, "
    "e.g. /source/data/app).",
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    help="Skip matching paths (repeatable or comma-separated; absolute ones are pod paths). "
    "Cannot be combined with --include.",
)
@connection_options
def download(
    snapshot: str,
    destination: Path | None,
    components: str | None,
    includes: tuple[str, ...],
    excludes: tuple[str, ...],
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Restore a Snapshot's components to local disk: <destination>/<snapshot>/<component>/<backed-up path>."""
    include, exclude = split_values(includes), split_values(excludes)
    if include and exclude:
        raise UsageFailure("--include and --exclude cannot be combined (restic restores with one kind of pattern)")
    wanted = split_values([components] if components is not None else None)
    if components is not None and not wanted:
        raise UsageFailure("--components names no component")
    conn = connect(kubeconfig, context, namespace)
    dest = (destination or Path.cwd()).absolute()
    if dest.exists() and not dest.is_dir():
        raise UsageFailure(f"--destination {dest} is not a directory")
    line = ProgressLine(sys.stderr)
    with api_errors():
        outcomes = asyncio.run(_download(conn, snapshot, dest, wanted, include, exclude, configured_engine(), line))
    if any(not o.ok for o in outcomes):
        raise click.exceptions.Exit(1)
