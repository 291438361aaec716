"""``kubestash repo``: drive a restic repository directly, with the native engine or with restic itself.

Users debugging a backup, and tests exercising the native engine, need to look at a repository without a
cluster: list its snapshots, list or restore a snapshot's files, check it, and see how big a restore would be.
These commands take restic's own spelling (``-r REPO`` as a local path or ``s3:http(s)://host[:port]/bucket/
prefix``, the password from ``RESTIC_PASSWORD`` or ``--password-file``, ``--json`` output in restic's JSON
shapes) so that anything written for ``restic`` works here, and ``--engine restic`` runs the restic binary with
the same arguments -- the two engines can be compared on the same repository with one flag.

Subcommands: init, backup, forget, prune, unlock and key write (restic's output wording; ``backup --json``
prints restic's summary message); snapshots, ls, dump, restore, check and stats only read. Each takes the lock restic
0.14's command takes (shared for backup/restore/key list/add, exclusive for check/forget/prune/key remove/
passwd). Failures print one line (``Error: ...``) and exit 1, never a traceback and never the password; usage
errors exit 2. ``check`` exits 1 when it finds errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import click

from kubestash.api.sizes import human_size
from kubestash.backends.base import BackendError
from kubestash.engine.native.backup import BackupError, BackupProgress, BackupSummary
from kubestash.engine.native.crypto import CryptoError
from kubestash.engine.native.files import load_json
from kubestash.engine.native.lock import locked
from kubestash.engine.native.pack import IntegrityError
from kubestash.engine.native.repository import NativeRepository, RepositoryError, SnapshotInfo
from kubestash.engine.native.restore import safe_name, subtree_of
from kubestash.engine.native.store import Store, StoreError, path_of, store_from_url
from kubestash.engine.native.tree import Node

T = TypeVar("T")

_FAILURES = (RepositoryError, IntegrityError, StoreError, BackendError, CryptoError, OSError, ValueError)


class CliError(click.ClickException):
    """A failure: ``Error: <one line>`` on stderr, exit code 1."""


@dataclass(frozen=True)
class Options:
    repository: str
    password_file: Path | None
    engine: str
    json: bool


# ------------------------------------------------------------------ repository location and password


def open_store(spec: str) -> Store:
    """The native store for ``-r``: a local directory, or an S3 bucket prefix (``AWS_*`` from the environment)."""
    try:
        return store_from_url(spec, os.environ)
    except ValueError as e:
        raise CliError(str(e)) from None


def read_password(opts: Options) -> str:
    """restic's rules: ``--password-file`` (whitespace trimmed), else ``RESTIC_PASSWORD``; never empty."""
    if opts.password_file is not None:
        try:
            password = opts.password_file.read_text().strip()
        except OSError as e:
            raise CliError(f"cannot read the password file {opts.password_file}: {e.strerror or e}") from None
    else:
        password = os.environ.get("RESTIC_PASSWORD", "")
    if not password:
        raise CliError("no password: set RESTIC_PASSWORD or pass --password-file (an empty password is not allowed)")
    return password


def run_on_store(opts: Options, work: Callable[[Store, str], Coroutine[Any, Any, T]]) -> T:
    """Run ``work(store, password)``; storage and repository failures become one-line errors."""
    password = read_password(opts)
    store = open_store(opts.repository)
    try:
        return asyncio.run(work(store, password))
    except (*_FAILURES, BackupError) as e:
        message = e.message if isinstance(e, BackendError) else str(e) or type(e).__name__
        message = " ".join(message.replace(password, "***").split())
        raise CliError(message) from None


def run_native(opts: Options, work: Callable[[NativeRepository], Awaitable[T]], *, lock: bool | None = None) -> T:
    """Open the repository and run ``work`` on it, holding a lock as restic 0.14's command would (``lock``:
    True exclusive, False shared, None none); failures become one-line errors."""

    async def main(store: Store, password: str) -> T:
        repository = await NativeRepository.open(store, password)
        if lock is None:
            return await work(repository)
        async with locked(repository, exclusive=lock):
            return await work(repository)

    return run_on_store(opts, main)


def run_restic(opts: Options, args: Sequence[str]) -> None:
    """Replace this process with ``restic -r REPO [--json] [--password-file F] ARGS`` (RESTIC_PASSWORD passes
    through the environment)."""
    argv = ["restic", "-r", opts.repository]
    if opts.json:
        argv.append("--json")
    if opts.password_file is not None:
        argv += ["--password-file", str(opts.password_file)]
    argv += list(args)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp("restic", argv)
    except OSError as e:
        raise CliError(f"cannot run restic: {e.strerror or e}") from None


def emit(doc: Any) -> None:
    click.echo(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))


# ------------------------------------------------------------------ the group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-r",
    "--repo",
    "repository",
    envvar="RESTIC_REPOSITORY",
    required=True,
    help="Repository: a local path or s3:http(s)://host[:port]/bucket/prefix ($RESTIC_REPOSITORY).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="RESTIC_PASSWORD_FILE",
    help="Read the password from this file (default: $RESTIC_PASSWORD).",
)
@click.option(
    "--engine",
    type=click.Choice(["native", "restic"]),
    default="native",
    show_default=True,
    help="native: kubestash's own reader; restic: run the restic binary with the same arguments.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON in restic's shapes.")
@click.pass_context
def repo(ctx: click.Context, repository: str, password_file: Path | None, engine: str, as_json: bool) -> None:
    """Work on a restic repository directly (no cluster needed)."""
    ctx.obj = Options(repository, password_file, engine, as_json)


# ------------------------------------------------------------------ snapshots


async def _snapshot_doc(repository: NativeRepository, snapshot: SnapshotInfo) -> dict[str, Any]:
    """The snapshot file's JSON as stored (restic's field order) plus ``id`` and ``short_id``, as restic prints."""
    doc = load_json(repository.key, await repository.store.get(path_of("snapshots", snapshot.id)))
    if not isinstance(doc, dict):
        raise IntegrityError(f"snapshot {snapshot.id} is not a JSON object")
    return {**doc, "id": snapshot.id, "short_id": snapshot.short_id}


def _table(snapshots: list[SnapshotInfo]) -> list[str]:
    rows = [("ID", "Time", "Host", "Tags", "Paths")]
    for s in snapshots:
        time = s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
        lines = max(len(s.paths), len(s.tags), 1)
        for i in range(lines):
            first = i == 0
            rows.append(
                (
                    s.short_id if first else "",
                    time if first else "",
                    s.hostname if first else "",
                    s.tags[i] if i < len(s.tags) else "",
                    s.paths[i] if i < len(s.paths) else "",
                )
            )
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(4)]
    lines_out = ["".join(r[c].ljust(widths[c]) for c in range(4)) + r[4] for r in rows]
    rule = "-" * max(len(line) for line in lines_out)
    return [lines_out[0], rule, *lines_out[1:], rule, f"{len(snapshots)} snapshots"]


@repo.command()
@click.pass_obj
def snapshots(opts: Options) -> None:
    """List all snapshots (oldest first)."""
    if opts.engine == "restic":
        run_restic(opts, ["snapshots"])

    async def work(repository: NativeRepository) -> None:
        found = await repository.snapshots()
        if opts.json:
            emit([await _snapshot_doc(repository, s) for s in found])
        else:
            click.echo("\n".join(_table(found)))

    run_native(opts, work)


# ------------------------------------------------------------------ ls


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


_GO_MODE_CHARS = "dalTLDpSugct?"


def go_mode_string(mode: int) -> str:
    """Go's ``os.FileMode.String()`` (``drwxr-xr-x``, ``Lrwxrwxrwx``): what restic prints as permissions."""
    flags = "".join(c for i, c in enumerate(_GO_MODE_CHARS) if mode & (1 << (31 - i)))
    perms = "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx"))
    return (flags or "-") + perms


def _ls_node(path: str, node: Node) -> dict[str, Any]:
    """restic 0.14's ``ls --json`` node line."""
    doc: dict[str, Any] = {"name": node.name, "type": node.type, "path": path, "uid": node.uid, "gid": node.gid}
    if node.size:
        doc["size"] = node.size
    doc.update(mode=node.mode, permissions=go_mode_string(node.mode))
    doc.update(mtime=node.mtime.to_json(), atime=node.atime.to_json(), ctime=node.ctime.to_json())
    doc["struct_type"] = "node"
    return doc


async def walk(
    repository: NativeRepository, tree_id: str, prefix: str = "", descend: Callable[[str], bool] | None = None
) -> AsyncIterator[tuple[str, Node]]:
    """Every node below ``tree_id`` depth first, a directory before its contents, as (snapshot path, node);
    ``descend(path)`` decides whether to enter a directory (default: always)."""
    for node in await repository.load_tree(tree_id):
        path = f"{prefix}/{safe_name(node)}"
        yield path, node
        if node.type == "dir" and (descend is None or descend(path)):
            async for item in walk(repository, subtree_of(node), path, descend):
                yield item


@repo.command()
@click.argument("snapshot")
@click.argument("dirs", nargs=-1)
@click.option("--recursive", is_flag=True, help="With directories given: list everything below them.")
@click.pass_obj
def ls(opts: Options, snapshot: str, dirs: tuple[str, ...], recursive: bool) -> None:
    """List the files of SNAPSHOT (id, prefix or latest), or only of the absolute DIRS in it."""
    if opts.engine == "restic":
        run_restic(opts, ["ls", snapshot, *dirs, *(["--recursive"] if recursive else [])])
    if any(not d.startswith("/") for d in dirs):
        raise CliError("all path filters must be absolute, starting with a forward slash '/'")
    wanted = [str(PurePosixPath(d)) for d in dirs]

    def within(path: str) -> bool:
        return not wanted or any(_within(path, d) for d in wanted)

    def descend(path: str) -> bool:
        # restic's walk: enter a directory that is selected (with --recursive) or on the way to a selected one.
        return not wanted or (recursive and within(path)) or any(_within(d, path) for d in wanted)

    async def work(repository: NativeRepository) -> None:
        found = await repository.find_snapshot(snapshot)
        if opts.json:
            emit({**await _snapshot_doc(repository, found), "struct_type": "snapshot"})
        else:
            click.echo(
                f"snapshot {found.short_id} of [{' '.join(found.paths)}] filtered by [{' '.join(dirs)}] "
                f"at {found.time_text}):"
            )
        async for path, node in walk(repository, found.tree, descend=descend):
            if within(path):
                if opts.json:
                    emit(_ls_node(path, node))
                else:
                    click.echo(path)

    run_native(opts, work)


@repo.command()
@click.argument("snapshot")
@click.argument("path")
@click.pass_obj
def dump(opts: Options, snapshot: str, path: str) -> None:
    """Write the file PATH of SNAPSHOT to stdout; a directory (or /) as a tar archive, like restic dump."""
    if opts.engine == "restic":
        run_restic(opts, ["dump", snapshot, path])
    from kubestash.engine.native.dump import dump as native_dump

    async def work(repository: NativeRepository) -> None:
        found = await repository.find_snapshot(snapshot)
        await native_dump(repository, found.tree, path, sys.stdout.buffer)

    run_native(opts, work, lock=False)


# ------------------------------------------------------------------ restore


@repo.command()
@click.argument("snapshot")
@click.option("-t", "--target", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("-i", "--include", multiple=True, help="Restore only paths matching this pattern (repeatable).")
@click.option("-e", "--exclude", multiple=True, help="Do not restore paths matching this pattern (repeatable).")
@click.pass_obj
def restore(opts: Options, snapshot: str, target: Path, include: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    """Restore SNAPSHOT (id, prefix or latest) below --target, each path at its full path."""
    if opts.engine == "restic":
        args = ["restore", snapshot, "--target", str(target)]
        args += [a for p in include for a in ("--include", p)] + [a for p in exclude for a in ("--exclude", p)]
        run_restic(opts, args)
    from kubestash.engine.native.restore import restore as native_restore

    async def work(repository: NativeRepository) -> None:
        found = await repository.find_snapshot(snapshot)
        if not opts.json:
            click.echo(f"restoring snapshot {found.short_id} of [{' '.join(found.paths)}] to {target}")
        files, size = await native_restore(repository, found.id, target, include, exclude)
        if opts.json:
            emit({"message_type": "summary", "files_restored": files, "bytes_restored": size})
        else:
            click.echo(f"restored {files} files, {human_size(size)}")

    run_native(opts, work, lock=False)


# ------------------------------------------------------------------ check


@repo.command()
@click.option("--read-data", is_flag=True, help="Also read every pack and verify every blob's content.")
@click.pass_obj
def check(opts: Options, read_data: bool) -> None:
    """Check the repository's structure (and with --read-data its content); exit 1 on errors."""
    if opts.engine == "restic":
        run_restic(opts, ["check", *(["--read-data"] if read_data else [])])
    from kubestash.engine.native.check import CheckReport
    from kubestash.engine.native.check import check as native_check

    if not opts.json:
        click.echo("load indexes\ncheck all packs\ncheck snapshots, trees and blobs")
        if read_data:
            click.echo("read all data")

    async def work(repository: NativeRepository) -> CheckReport:
        return await native_check(repository, read_data=read_data)

    report = run_native(opts, work, lock=True)
    if opts.json:
        emit(
            {
                "message_type": "summary",
                "num_errors": len(report.errors),
                "num_warnings": len(report.warnings),
                "errors": report.errors,
                "warnings": report.warnings,
                "packs": report.counters.packs,
                "blobs": report.counters.blobs,
                "snapshots": report.counters.snapshots,
                "trees": report.counters.trees,
                "read_data": report.read_data,
            }
        )
    else:
        for line in report.warnings:
            click.echo(line)
        if report.warnings:
            click.echo(
                f"{len(report.warnings)} additional files were found in the repo, which likely contain "
                "duplicate data.\nYou can run `kubestash repo prune` (or `restic prune`) to correct this."
            )
        for line in report.errors:
            click.echo(f"error: {line}")
        if report.ok:
            click.echo("no errors were found")
    if not report.ok:
        raise CliError(f"repository contains errors ({len(report.errors)})")


# ------------------------------------------------------------------ unlock


@repo.command()
@click.option("--remove-all", is_flag=True, help="Remove all locks, even non-stale ones.")
@click.pass_obj
def unlock(opts: Options, remove_all: bool) -> None:
    """Remove stale locks (older than 30 minutes, or of a process gone from this host) left by crashed runs."""
    if opts.engine == "restic":
        run_restic(opts, ["unlock", *(["--remove-all"] if remove_all else [])])
    from kubestash.engine.native.lock import remove_locks

    async def work(repository: NativeRepository) -> int:
        return await remove_locks(repository, all=remove_all)

    run_native(opts, work)
    click.echo("successfully removed locks")


# ------------------------------------------------------------------ key


def _new_password(path: Path | None) -> str:
    """restic's ``--new-password-file`` (whitespace trimmed); there is no interactive prompt here."""
    if path is None:
        raise CliError("--new-password-file is required (the new password is never prompted for)")
    try:
        password = path.read_text().strip()
    except OSError as e:
        raise CliError(f"cannot read the new password file {path}: {e.strerror or e}") from None
    if not password:
        raise CliError("an empty password is not allowed")
    return password


_NEW_PASSWORD_FILE = click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File from which to read the new password.",
)


@repo.group()
def key() -> None:
    """Manage keys (passwords) for accessing the repository."""


@key.command("list")
@click.pass_obj
def key_list(opts: Options) -> None:
    """List the key files; * marks the one the password opened."""
    if opts.engine == "restic":
        run_restic(opts, ["key", "list"])
    from kubestash.engine.native.keys import list_keys

    found = run_native(opts, list_keys, lock=False)
    created = [k.created.astimezone().strftime("%Y-%m-%d %H:%M:%S") if k.created else "" for k in found]
    if opts.json:  # restic's field names, short ids and local "created" time
        emit(
            [
                {"current": k.current, "id": k.id[:8], "userName": k.username, "hostName": k.hostname, "created": c}
                for k, c in zip(found, created, strict=True)
            ]
        )
        return
    table = [(" ID", "User", "Host", "Created")]
    table += [
        (f"{'*' if k.current else ' '}{k.id[:8]}", k.username, k.hostname, c)
        for k, c in zip(found, created, strict=True)
    ]
    widths = [max(len(r[c]) for r in table) + 2 for c in range(3)]
    lines = ["".join(r[c].ljust(widths[c]) for c in range(3)) + r[3] for r in table]
    rule = "-" * max(len(line) for line in lines)
    click.echo("\n".join([lines[0], rule, *lines[1:], rule]))


@key.command("add")
@_NEW_PASSWORD_FILE
@click.option("--user", default="", help="The username for the new key (default: this user).")
@click.option("--host", default="", help="The hostname for the new key (default: this host).")
@click.pass_obj
def key_add(opts: Options, new_password_file: Path | None, user: str, host: str) -> None:
    """Add a key file: a new password that opens the repository."""
    if opts.engine == "restic":
        args = ["key", "add"] + (["--new-password-file", str(new_password_file)] if new_password_file else [])
        run_restic(opts, args + (["--user", user] if user else []) + (["--host", host] if host else []))
    from kubestash.engine.native.keys import add_key

    password = _new_password(new_password_file)

    async def work(repository: NativeRepository) -> str:
        return await add_key(repository, password, user=user, host=host)

    new_id = run_native(opts, work, lock=False)
    click.echo(f"saved new key as {new_id}")


@key.command("remove")
@click.argument("key_id", metavar="ID")
@click.pass_obj
def key_remove(opts: Options, key_id: str) -> None:
    """Remove the key file ID (full id or unique prefix); not the one the password opened."""
    if opts.engine == "restic":
        run_restic(opts, ["key", "remove", key_id])
    from kubestash.engine.native.keys import remove_key

    async def work(repository: NativeRepository) -> None:
        await remove_key(repository, key_id)

    run_native(opts, work, lock=True)
    click.echo(f"removed key {key_id}")


@key.command("passwd")
@_NEW_PASSWORD_FILE
@click.pass_obj
def key_passwd(opts: Options, new_password_file: Path | None) -> None:
    """Change the password: add a key for the new password, then remove the current one."""
    if opts.engine == "restic":
        new_file = ["--new-password-file", str(new_password_file)] if new_password_file else []
        run_restic(opts, ["key", "passwd", *new_file])
    from kubestash.engine.native.keys import change_password

    password = _new_password(new_password_file)

    async def work(repository: NativeRepository) -> str:
        return await change_password(repository, password)

    new_id = run_native(opts, work, lock=True)
    click.echo(f"saved new key as {new_id}")


# ------------------------------------------------------------------ stats


async def restore_size(repository: NativeRepository, snapshot: SnapshotInfo) -> tuple[int, int]:
    """(total size, file count) in restic's ``restore-size`` mode: every node counts as a file; file sizes
    count once per inode within a snapshot (hard links restore once)."""
    inodes: set[int] = set()
    size = count = 0
    async for _, node in walk(repository, snapshot.tree):
        count += 1
        if node.inode == 0 or node.inode not in inodes:
            inodes.add(node.inode)
            size += node.size
    return size, count


@repo.command()
@click.argument("snapshot", required=False)
@click.option("--mode", type=click.Choice(["restore-size"]), default="restore-size", show_default=True)
@click.pass_obj
def stats(opts: Options, snapshot: str | None, mode: str) -> None:
    """Size of a restore of SNAPSHOT (default: of every snapshot), as restic's restore-size mode counts it."""
    if opts.engine == "restic":
        run_restic(opts, ["stats", *([snapshot] if snapshot else []), "--mode", mode])

    async def work(repository: NativeRepository) -> tuple[int, int, int]:
        chosen = [await repository.find_snapshot(snapshot)] if snapshot else await repository.snapshots()
        size = count = 0
        for s in chosen:
            s_size, s_count = await restore_size(repository, s)
            size, count = size + s_size, count + s_count
        return size, count, len(chosen)

    size, count, processed = run_native(opts, work)
    if opts.json:
        emit({"total_size": size, "total_file_count": count, "snapshots_count": processed})
    else:
        click.echo(
            f"Stats in {mode} mode:\nSnapshots processed:   {processed}\n   Total File Count:   {count}\n"
            f"         Total Size:   {human_size(size)}"
        )


# ------------------------------------------------------------------ init

_INIT_NOTE = (
    "Please note that knowledge of your password is required to access\n"
    "the repository. Losing your password means that your data is\n"
    "irrecoverably lost."
)


@repo.command()
@click.option(
    "--repository-version",
    type=click.Choice(["1", "2"]),
    default="2",
    show_default=True,
    help="Repository format version (2 compresses).",
)
@click.pass_obj
def init(opts: Options, repository_version: str) -> None:
    """Create a new repository at -r, opened by the password."""
    if opts.engine == "restic":
        run_restic(opts, ["init", "--repository-version", repository_version])
    from kubestash.engine.native.init import init_repository

    async def work(store: Store, password: str) -> str:
        return (await init_repository(store, password, version=int(repository_version))).config.id

    repo_id = run_on_store(opts, work)
    if opts.json:
        emit({"message_type": "initialized", "id": repo_id, "repository": opts.repository})
    else:
        click.echo(f"created restic repository {repo_id[:10]} at {opts.repository}\n\n{_INIT_NOTE}")


# ------------------------------------------------------------------ backup


def format_duration(seconds: float) -> str:
    """restic's ``formatDuration``: ``m:ss``, or ``h:mm:ss`` from an hour on."""
    total = int(seconds)
    hours, minutes, secs = total // 3600, total // 60 % 60, total % 60
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary_doc(summary: BackupSummary) -> dict[str, Any]:
    """restic 0.14's ``backup --json`` summary message (its snapshot_id is the short id)."""
    return {
        "message_type": "summary",
        "files_new": summary.files_new,
        "files_changed": summary.files_changed,
        "files_unmodified": summary.files_unmodified,
        "dirs_new": summary.dirs_new,
        "dirs_changed": summary.dirs_changed,
        "dirs_unmodified": summary.dirs_unmodified,
        "data_blobs": summary.data_blobs,
        "tree_blobs": summary.tree_blobs,
        "data_added": summary.data_added,
        "total_files_processed": summary.total_files_processed,
        "total_bytes_processed": summary.total_bytes_processed,
        "total_duration": summary.total_duration,
        "snapshot_id": summary.snapshot_id[:8],
    }


def summary_lines(summary: BackupSummary) -> list[str]:
    """restic 0.14's closing lines of ``backup``."""
    return [
        "",
        f"Files:       {summary.files_new:5d} new, {summary.files_changed:5d} changed, "
        f"{summary.files_unmodified:5d} unmodified",
        f"Dirs:        {summary.dirs_new:5d} new, {summary.dirs_changed:5d} changed, "
        f"{summary.dirs_unmodified:5d} unmodified",
        f"Added to the repository: {human_size(summary.data_added)} stored",
        "",
        f"processed {summary.total_files_processed} files, {human_size(summary.total_bytes_processed)} "
        f"in {format_duration(summary.total_duration)}",
        f"snapshot {summary.snapshot_id[:8]} saved",
    ]


def _tty_progress() -> Callable[[BackupProgress], None] | None:
    """A one-line progress report on stderr, at most every 0.2 s, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    import time

    started = time.monotonic()
    last = [0.0]

    def report(p: BackupProgress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2:
            return
        last[0] = now
        line = (
            f"[{format_duration(now - started)}] {p.files_done} files {human_size(p.bytes_done)}, "
            f"added {human_size(p.data_added)}"
        )
        sys.stderr.write(f"\r{line}\x1b[K")
        sys.stderr.flush()

    return report


@repo.command()
@click.argument("paths", nargs=-1)
@click.option("--stdin", "from_stdin", is_flag=True, help="Back up standard input as one file (a database dump).")
@click.option("--stdin-filename", default="stdin", show_default=True, help="With --stdin: the file's name.")
@click.option("-e", "--exclude", multiple=True, help="Leave out paths matching this pattern (repeatable).")
@click.option("--host", help="Host name recorded in the snapshot (default: this machine's).")
@click.option("--tag", multiple=True, help="Tag the snapshot (repeatable).")
@click.option(
    "--parent",
    default="auto",
    show_default=True,
    help="Snapshot to compare against (id, prefix or latest); auto: the newest of this host and these paths.",
)
@click.pass_obj
def backup(
    opts: Options,
    paths: tuple[str, ...],
    from_stdin: bool,
    stdin_filename: str,
    exclude: tuple[str, ...],
    host: str | None,
    tag: tuple[str, ...],
    parent: str,
) -> None:
    """Back up PATHS (or, with --stdin, standard input) into a new snapshot."""
    if from_stdin == bool(paths):
        raise click.UsageError("give PATHS to back up, or --stdin (not both)")
    if opts.engine == "restic":
        args = ["backup", *paths] + [a for p in exclude for a in ("--exclude", p)]
        args += ["--stdin", "--stdin-filename", stdin_filename] if from_stdin else []
        args += (["--host", host] if host else []) + [a for t in tag for a in ("--tag", t)]
        args += [] if parent == "auto" else ["--parent", parent]
        run_restic(opts, args)
    from kubestash.engine.native.backup import backup as native_backup
    from kubestash.engine.native.stdin import backup_stream, file_stream

    progress = None if opts.json else _tty_progress()

    async def work(repository: NativeRepository) -> BackupSummary:
        if from_stdin:
            stream = file_stream(sys.stdin.buffer)
            return await backup_stream(repository, stream, stdin_filename, host=host, tags=tag, on_progress=progress)
        return await native_backup(
            repository, paths, excludes=exclude, host=host, tags=tag, parent=parent, on_progress=progress
        )

    summary = run_native(opts, work, lock=False)
    if progress is not None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
    if opts.json:
        emit(summary_doc(summary))
    else:
        if summary.parent:
            click.echo(f"using parent snapshot {summary.parent[:8]}")
        else:
            click.echo("no parent snapshot found, will read all files")
        click.echo("\n".join(summary_lines(summary)))


# ------------------------------------------------------------------ forget and prune

_KEEP_RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_RULE_WORDS = {"last": "latest"}


def parse_max_unused(text: str) -> float:
    """restic's ``--max-unused`` as a fraction: ``5%``, ``0`` or ``unlimited`` (absolute sizes: use restic)."""
    from kubestash.engine.native.prune import UNLIMITED

    value = text.strip()
    if value == "unlimited":
        return UNLIMITED
    try:
        number = float(value.removesuffix("%"))
    except ValueError:
        number = -1.0
    if not (value.endswith("%") or value == "0") or not 0 <= number <= 100:
        raise click.BadParameter(
            f"{text!r}: give a percentage (5%), 0 or unlimited; absolute sizes need --engine restic",
            param_hint="'--max-unused'",
        )
    return UNLIMITED if number >= 100 else number / 100


async def _run_prune(
    repository: NativeRepository, max_unused: float, dry_run: bool, ignore: Sequence[str], say: Callable[[str], None]
) -> None:
    """The native prune; its restic 0.14-style lines (phases, plan summary) go to ``say`` as they happen."""
    from kubestash.engine.native.prune import prune as native_prune

    await native_prune(repository, max_unused=max_unused, dry_run=dry_run, on_progress=say, ignore_snapshots=ignore)


def _forget_table(title: str, found: list[SnapshotInfo], reasons: dict[str, list[str]] | None) -> list[str]:
    """restic's keep/remove table (oldest first; with a Reasons column for kept snapshots)."""
    header = ["ID", "Time", "Host", "Tags", *(["Reasons"] if reasons is not None else []), "Paths"]
    rows = [header]
    for s in sorted(found, key=lambda s: (s.time, s.id)):
        why = reasons.get(s.id, []) if reasons is not None else []
        for i in range(max(len(s.paths), len(s.tags), len(why), 1)):
            first = i == 0
            row = [
                s.short_id if first else "",
                s.time.astimezone().strftime("%Y-%m-%d %H:%M:%S") if first else "",
                s.hostname if first else "",
                s.tags[i] if i < len(s.tags) else "",
            ]
            if reasons is not None:
                row.append(why[i] if i < len(why) else "")
            rows.append([*row, s.paths[i] if i < len(s.paths) else ""])
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(len(header) - 1)]
    lines = [("".join(r[c].ljust(widths[c]) for c in range(len(widths))) + r[-1]).rstrip() for r in rows]
    rule = "-" * max(len(line) for line in lines)
    return [f"{title} {len(found)} snapshots:", lines[0], rule, *lines[1:], rule, f"{len(found)} snapshots", ""]


def _restic_reasons(reasons: tuple[str, ...]) -> list[str]:
    """``kept: daily 2026-01-02`` → restic's ``daily snapshot``."""
    return [f"{r.split()[1]} snapshot" for r in reasons if r.startswith("kept: ") and r.split()[1] in _KEEP_RULES]


@repo.command()
@click.argument("snapshot_ids", nargs=-1)
@click.option("--keep-last", type=click.IntRange(min=0), default=0, help="Keep the last N snapshots.")
@click.option("--keep-hourly", type=click.IntRange(min=0), default=0, help="Keep the last N hourly snapshots.")
@click.option("--keep-daily", type=click.IntRange(min=0), default=0, help="Keep the last N daily snapshots.")
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0, help="Keep the last N weekly snapshots.")
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0, help="Keep the last N monthly snapshots.")
@click.option("--keep-yearly", type=click.IntRange(min=0), default=0, help="Keep the last N yearly snapshots.")
@click.option("--host", help="Only consider snapshots of this host.")
@click.option("--path", "paths", multiple=True, help="Only consider snapshots holding this path (repeatable).")
@click.option("--prune", "then_prune", is_flag=True, help="Run prune afterwards if snapshots were removed.")
@click.option("-n", "--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--max-unused", default="5%", show_default=True, help="With --prune: tolerated unused data.")
@click.pass_obj
def forget(
    opts: Options,
    snapshot_ids: tuple[str, ...],
    keep_last: int,
    keep_hourly: int,
    keep_daily: int,
    keep_weekly: int,
    keep_monthly: int,
    keep_yearly: int,
    host: str | None,
    paths: tuple[str, ...],
    then_prune: bool,
    dry_run: bool,
    max_unused: str,
) -> None:
    """Remove the snapshots SNAPSHOT_IDS, or those a --keep-* policy does not keep (grouped by host and paths).

    Only snapshot files go; --prune then removes the data no remaining snapshot uses. Hold the repository
    exclusively (no backup running) while forgetting with --prune.
    """
    keeps = (keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    counts = dict(zip(_KEEP_RULES, keeps, strict=True))
    fraction = parse_max_unused(max_unused)
    if snapshot_ids and (any(counts.values()) or host or paths):
        raise click.UsageError("give either snapshot IDs or a --keep-* policy (with --host/--path), not both")
    if opts.engine == "restic":
        args = ["forget", *snapshot_ids]
        args += [a for rule, n in counts.items() if n for a in (f"--keep-{rule}", str(n))]
        args += (["--host", host] if host else []) + [a for p in paths for a in ("--path", p)]
        args += (["--prune", "--max-unused", max_unused] if then_prune else []) + (["--dry-run"] if dry_run else [])
        run_restic(opts, args)
    from datetime import UTC, datetime

    from kubestash.api.storage import RetentionPolicySpec, SuccessfulSnapshotsKeepPolicy
    from kubestash.engine.native.prune import delete_snapshots, plan_forget, resolve_snapshots

    # With --json, stdout carries only restic's forget JSON; prune's progress goes to stderr.
    def say(line: str) -> None:
        click.echo(line, err=opts.json)

    async def work(repository: NativeRepository) -> None:
        snapshots = await repository.snapshots()
        if snapshot_ids:
            removed = resolve_snapshots(snapshots, snapshot_ids)
            if not dry_run:
                await delete_snapshots(repository, removed)
            for s in removed:
                say(f"{'would have removed' if dry_run else 'removed'} snapshot {s.short_id}")
        elif not any(counts.values()):
            say("no policy was specified, no snapshots will be removed")
            removed = []
        else:
            policy = RetentionPolicySpec(
                successful_snapshots=SuccessfulSnapshotsKeepPolicy(**{r: n or None for r, n in counts.items()})
            )
            groups = plan_forget(snapshots, policy, now=datetime.now(UTC), host=host, paths=paths or None)
            if opts.json:
                emit(
                    [
                        await _forget_group_doc(repository, (g.host, g.paths), (g.keep, g.remove), g.reasons, counts)
                        for g in groups
                    ]
                )
            else:
                rules = [f"{n} {_RULE_WORDS.get(r, r)}" for r, n in counts.items() if n]
                click.echo(f"Applying Policy: keep {', '.join(rules)} snapshots")
                for g in groups:
                    reasons = {i: _restic_reasons(r) for i, r in g.reasons.items()}
                    click.echo("\n".join(_forget_table("keep", g.keep, reasons)))
                    if g.remove:
                        click.echo("\n".join(_forget_table("remove", g.remove, None)))
            removed = [s for g in groups for s in g.remove]
            if dry_run and removed and not opts.json:
                click.echo("Would have removed the following snapshots:")
                oldest_first = sorted(removed, key=lambda s: (s.time, s.id))
                click.echo("{" + " ".join(s.short_id for s in oldest_first) + "}\n")
            if not dry_run:
                await delete_snapshots(repository, removed)
        if then_prune and removed:
            say(f"{len(removed)} snapshots have been removed, running prune")
            await _run_prune(repository, fraction, dry_run, [s.id for s in removed], say)

    run_native(opts, work, lock=None if dry_run else True)


async def _forget_group_doc(
    repository: NativeRepository,
    key: tuple[str, tuple[str, ...]],
    decided: tuple[list[SnapshotInfo], list[SnapshotInfo]],
    why: dict[str, tuple[str, ...]],
    counts: dict[str, int],
) -> dict[str, Any]:
    """restic 0.14's ``forget --json`` entry for one group (host, paths): keep, remove (newest first) and the
    reasons with the rule counters left after each kept snapshot."""
    keep = [await _snapshot_doc(repository, s) for s in decided[0]]
    remove = [await _snapshot_doc(repository, s) for s in decided[1]]
    remaining = {r: n for r, n in counts.items() if n}
    reasons = []
    for s, doc in zip(decided[0], keep, strict=True):
        matches = _restic_reasons(why[s.id])
        for match in matches:
            rule = match.split()[0]
            remaining[rule] -= 1
        stored = {k: v for k, v in doc.items() if k not in ("id", "short_id")}
        counters = {r: n for r, n in remaining.items() if n > 0}
        reasons.append({"snapshot": stored, "matches": matches, "counters": counters})
    return {
        "tags": None,
        "host": key[0],
        "paths": list(key[1]),
        "keep": keep or None,
        "remove": remove or None,
        "reasons": reasons or None,
    }


@repo.command()
@click.option("--max-unused", default="5%", show_default=True, help="Tolerated unused data: N%, 0 or unlimited.")
@click.option("-n", "--dry-run", is_flag=True, help="Only show what would be removed and repacked.")
@click.pass_obj
def prune(opts: Options, max_unused: str, dry_run: bool) -> None:
    """Remove data no snapshot uses: delete unused packs, repack partly used ones (restic 0.14's algorithm).

    Holds an exclusive lock: it waits for no backup, it fails while one runs.
    """
    fraction = parse_max_unused(max_unused)
    if opts.engine == "restic":
        run_restic(opts, ["prune", "--max-unused", max_unused, *(["--dry-run"] if dry_run else [])])

    async def work(repository: NativeRepository) -> None:
        await _run_prune(repository, fraction, dry_run, (), click.echo)

    run_native(opts, work, lock=None if dry_run else True)
