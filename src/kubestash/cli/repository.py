"""``kubestash unlock`` and ``kubestash password``: KubeStash's repository-level ``kubectl kubestash`` commands.

A Repository is one restic repository per component path (``repository/v1/<session>/<component>``, listed in
``status.componentPaths``). Locks left by crashed jobs and restic keys live there, not in any Kubernetes
object, so these commands open each component repository directly -- with the same storage and encryption
Secrets the backup tasks use -- and run restic on it from this machine. (KubeStash's CLI routes the work
through the operator pod or an accessor pod instead; here the CLI runs where the storage is reachable.)

Each command works on all component paths or the ones ``--paths`` names, prints one line per path, and
exits 1 if any path failed after trying every one. Nothing printed ever holds a password or Secret value.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from kubestash.cli.backup import CliError, Connection, UsageFailure, api_errors, connect, connection_options
from kubestash.engine.base import Engine, EngineError, KeyInfo, RepositoryTarget
from kubestash.engine.select import configured_engine
from kubestash.tasks.access import AccessError, RepositoryAccess, open_repository

PARALLEL = 4
"""Component repositories worked on at the same time."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

PATHS_HELP = (
    "Comma-separated component paths (repository/v1/<session>/<component>); "
    "default: all of the Repository's status.componentPaths."
)


@dataclass(frozen=True)
class Line:
    """One result line: what happened to a component path, or why it failed."""

    path: str
    text: str
    ok: bool = True


Operation = Callable[[Engine, RepositoryTarget, str], Awaitable[list[Line]]]
"""Work on one component repository (engine, its target, its component path)."""


# ------------------------------------------------------------------ plumbing
def _norm(path: str) -> str:
    return path.strip().strip("/")


def select_paths(access: RepositoryAccess, wanted: Sequence[str] | None) -> list[str]:
    """All component paths, or the ``wanted`` ones (unknown ones are a usage error listing the known ones)."""
    known = access.component_paths()
    where = f"Repository {access.repository.namespace}/{access.repository.name}"
    if wanted is None:
        if not known:
            raise CliError(f"{where} has no component repositories yet (status.componentPaths is empty)")
        return known
    by_norm = {_norm(p): p for p in known}
    chosen = list(dict.fromkeys(_norm(p) for p in wanted if _norm(p)))
    unknown = [p for p in chosen if p not in by_norm]
    if unknown or not chosen:
        raise UsageFailure(
            f"{where} has no component path {', '.join(unknown) or '(none given)'}; "
            f"its component paths are: {', '.join(known) or '(none)'}"
        )
    return [by_norm[p] for p in chosen]


def split_paths(text: str | None) -> list[str] | None:
    return None if text is None else [p for p in text.split(",") if p.strip()]


def run(
    conn: Connection,
    name: str,
    plan: Callable[[RepositoryAccess], list[tuple[str, Operation]]],
    engine: Engine | None = None,
) -> tuple[RepositoryAccess, list[Line]]:
    """Open Repository ``name``, run the planned operations (one per component path) and print their lines.

    Successes go to stdout, failures to stderr as ``Error: <path>: <message>``; the lines come in plan
    order whatever order the paths finish in.
    """
    with api_errors():
        access, lines = asyncio.run(_run(conn, name, plan, engine or configured_engine()))
    for line in lines:
        if line.ok:
            click.echo(line.text)
        else:
            click.echo(f"Error: {line.path}: {line.text}", err=True)
    return access, lines


async def _run(
    conn: Connection, name: str, plan: Callable[[RepositoryAccess], list[tuple[str, Operation]]], engine: Engine
) -> tuple[RepositoryAccess, list[Line]]:
    client = conn.async_client()
    try:
        access = await open_repository(client, conn.namespace, name)
    except AccessError as exc:
        raise CliError(str(exc)) from None
    finally:
        await client.close()
    jobs = plan(access)
    limit = asyncio.Semaphore(PARALLEL)
    with tempfile.TemporaryDirectory(prefix="kubestash-cli-") as scratch:

        async def one(i: int, path: str, op: Operation) -> list[Line]:
            async with limit:
                try:
                    target = access.target(path, Path(scratch) / str(i), enable_cache=False)
                    return await op(engine, target, path)
                except AccessError as exc:
                    return [Line(path, str(exc), ok=False)]
                except EngineError as exc:
                    return [Line(path, exc.message, ok=False)]

        results = await asyncio.gather(*(one(i, path, op) for i, (path, op) in enumerate(jobs)))
    return access, [line for lines in results for line in lines]


def _exit_on_failure(lines: Sequence[Line]) -> None:
    if any(not line.ok for line in lines):
        raise click.exceptions.Exit(1)


def read_password_file(path: Path) -> str:
    """The new password: the file's text without one trailing newline (what ``echo pw > file`` adds)."""
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise UsageFailure(f"--new-password-file {path}: not UTF-8 text") from None
    except OSError as exc:
        raise CliError(f"--new-password-file {path}: {exc.strerror or exc}") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text or text != text.strip():
        raise UsageFailure(
            f"--new-password-file {path}: the password must be non-empty, without leading or trailing whitespace"
        )
    return text


# ------------------------------------------------------------------ unlock
@click.command()
@click.argument("repository")
@click.option("--paths", default=None, help=PATHS_HELP)
@click.option(
    "--force", is_flag=True, help="Remove every lock, also those of operations still running (restic --remove-all)."
)
@connection_options
def unlock(
    repository: str,
    paths: str | None,
    force: bool,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Remove restic locks from a Repository's component repositories.

    Without --force only stale locks go (their process is gone, or they were not refreshed for 30 minutes);
    locks of backups or restores still running are kept.
    """

    async def op(engine: Engine, target: RepositoryTarget, path: str) -> list[Line]:
        await engine.unlock(target, remove_all=force)
        if force:
            return [Line(path, f"{path}: all locks removed")]
        return [Line(path, f"{path}: stale locks removed; locks of running operations kept (--force removes them)")]

    wanted = split_paths(paths)
    _, lines = run(
        connect(kubeconfig, context, namespace),
        repository,
        lambda access: [(p, op) for p in select_paths(access, wanted)],
    )
    _exit_on_failure(lines)


# ------------------------------------------------------------------ password
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def password() -> None:
    """Manage the restic keys (passwords) of a Repository's component repositories (alias: pw)."""


def format_keys(keys: Sequence[KeyInfo]) -> list[str]:
    """``ID CURRENT USER HOST CREATED`` aligned as kubectl prints tables; CURRENT is ``*`` for the key in use."""
    header = ["ID", "CURRENT", "USER", "HOST", "CREATED"]
    rows = [
        [
            k.id,
            "*" if k.current else "",
            k.user,
            k.host,
            k.created.strftime("%Y-%m-%d %H:%M:%S UTC") if k.created else "",
        ]
        for k in keys
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]


@password.command("list")
@click.argument("repository")
@click.option("--paths", default=None, help=PATHS_HELP)
@connection_options
def list_keys(
    repository: str, paths: str | None, namespace: str | None, kubeconfig: Path | None, context: str | None
) -> None:
    """List the keys of each component repository."""

    async def op(engine: Engine, target: RepositoryTarget, path: str) -> list[Line]:
        keys = sorted(await engine.keys(target), key=lambda k: (not k.current, k.created or _EPOCH, k.id))
        table = format_keys(keys)
        return [Line(path, "\n".join([f"{path}:", *(f"  {row}" for row in table)]))]

    wanted = split_paths(paths)
    _, lines = run(
        connect(kubeconfig, context, namespace),
        repository,
        lambda access: [(p, op) for p in select_paths(access, wanted)],
    )
    _exit_on_failure(lines)


_NEW_PASSWORD_FILE = click.option(
    "--new-password-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the new password (one trailing newline is ignored).",
)


@password.command("add")
@click.argument("repository")
@_NEW_PASSWORD_FILE
@click.option("--user", default="", help="User name recorded in the new key (default: restic's, the local user).")
@click.option("--host", default="", help="Host name recorded in the new key (default: restic's, this host).")
@click.option("--paths", default=None, help=PATHS_HELP)
@connection_options
def add_key(
    repository: str,
    new_password_file: Path,
    user: str,
    host: str,
    paths: str | None,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Add a key (a second password) to each component repository."""
    new = read_password_file(new_password_file)
    recorded = ", ".join(f"{what} {value}" for what, value in (("user", user), ("host", host)) if value)

    async def op(engine: Engine, target: RepositoryTarget, path: str) -> list[Line]:
        await engine.add_key(target, new, user=user, host=host)
        return [Line(path, f"{path}: key added" + (f" ({recorded})" if recorded else ""))]

    wanted = split_paths(paths)
    _, lines = run(
        connect(kubeconfig, context, namespace),
        repository,
        lambda access: [(p, op) for p in select_paths(access, wanted)],
    )
    _exit_on_failure(lines)


@password.command("update")
@click.argument("repository")
@_NEW_PASSWORD_FILE
@click.option("--paths", default=None, help=PATHS_HELP)
@connection_options
def update_key(
    repository: str,
    new_password_file: Path,
    paths: str | None,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Change the password of the key in use (restic key passwd) in each component repository.

    The Repository's encryption Secret is not changed: update its RESTIC_PASSWORD afterwards.
    """
    new = read_password_file(new_password_file)

    async def op(engine: Engine, target: RepositoryTarget, path: str) -> list[Line]:
        await engine.update_key(target, new)
        return [Line(path, f"{path}: password of the current key changed")]

    wanted = split_paths(paths)
    access, lines = run(
        connect(kubeconfig, context, namespace),
        repository,
        lambda access: [(p, op) for p in select_paths(access, wanted)],
    )
    changed = [line.path for line in lines if line.ok]
    if changed:
        _warn_secret(access, changed)
    _exit_on_failure(lines)


def _warn_secret(access: RepositoryAccess, changed: Sequence[str]) -> None:
    repo = access.repository
    ref = repo.spec.encryption_secret
    secret = f"{(ref.namespace if ref else None) or repo.namespace}/{ref.name if ref else '?'}"
    click.echo(
        f"Warning: the encryption Secret {secret} still holds the old password: set its RESTIC_PASSWORD to the "
        f"new one, or KubeStash can no longer open {len(changed)} component repositor"
        f"{'y' if len(changed) == 1 else 'ies'} of Repository {repo.namespace}/{repo.name}.",
        err=True,
    )
    rest = [p for p in access.component_paths() if p not in changed]
    if rest:
        click.echo(
            f"Warning: {len(rest)} other component path{'' if len(rest) == 1 else 's'} still on the old password "
            f"({', '.join(rest)}): the Secret holds one password for all of them, so change theirs too.",
            err=True,
        )


def parse_id_paths(text: str) -> list[tuple[str, str]]:
    """``id:path[,id:path...]`` as (key id, component path) pairs."""
    pairs = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        key_id, sep, path = item.partition(":")
        if not sep or not key_id.strip() or not _norm(path):
            raise UsageFailure(f"--id-paths: expected <key id>:<component path>, got {item!r}")
        pairs.append((key_id.strip(), path))
    if not pairs:
        raise UsageFailure("--id-paths: no <key id>:<component path> given")
    return list(dict.fromkeys(pairs))


@password.command("remove")
@click.argument("repository")
@click.option(
    "--id-paths",
    required=True,
    help="Comma-separated <key id>:<component path> pairs naming the keys to remove (IDs as `password list` shows).",
)
@connection_options
def remove_key(
    repository: str, id_paths: str, namespace: str | None, kubeconfig: Path | None, context: str | None
) -> None:
    """Remove keys from component repositories (the key in use cannot be removed)."""
    pairs = parse_id_paths(id_paths)

    def plan(access: RepositoryAccess) -> list[tuple[str, Operation]]:
        paths = select_paths(access, [p for _, p in pairs])
        by_norm = {_norm(p): p for p in paths}
        ids: dict[str, list[str]] = {p: [] for p in paths}
        for key_id, path in pairs:
            ids[by_norm[_norm(path)]].append(key_id)

        def op_for(key_ids: list[str]) -> Operation:
            async def op(engine: Engine, target: RepositoryTarget, path: str) -> list[Line]:
                out = []
                for key_id in key_ids:  # one at a time: restic locks the repository exclusively
                    try:
                        await engine.remove_key(target, key_id)
                        out.append(Line(path, f"{path}: key {key_id} removed"))
                    except EngineError as exc:
                        out.append(Line(path, f"key {key_id}: {exc.message}", ok=False))
                return out

            return op

        return [(p, op_for(ids[p])) for p in paths]

    _, lines = run(connect(kubeconfig, context, namespace), repository, plan)
    _exit_on_failure(lines)


pw = click.Group(
    "pw",
    commands=password.commands,
    hidden=True,
    help="Alias of `password`.",
    context_settings={"help_option_names": ["-h", "--help"]},
)

COMMANDS = (unlock, password, pw)
