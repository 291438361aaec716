"""``kubestash trigger|pause|resume|get``: the everyday commands of KubeStash's ``kubectl kubestash`` plugin.

They talk to any API server (a cluster, or the bundled one ``kubestash up`` runs). ``trigger`` creates
BackupSessions exactly as KubeStash's CLI does, so the operator cannot tell them from scheduled ones;
``--wait`` follows them to the end, printing restic's progress from the Snapshots' status.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
import httpx2 as httpx
from lightkube import ApiError, AsyncClient, Client, KubeConfig
from lightkube.codecs import from_dict
from lightkube.config.client_adapter import Client as HttpClient
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from kubestash.api.sessions import CORE_GROUP, backup_session_manifest
from kubestash.api.sizes import human_size, parse_size
from kubestash.cli.up import DEFAULT_DATA_DIR

FINAL_PHASES = ("Succeeded", "Failed", "Skipped")
TABLE_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from kubestash.api.registry import KindInfo

STORAGE_GROUP = "storage.kubestash.com"
EVERYDAY_KINDS = {
    "BackupConfiguration": (CORE_GROUP, "backupconfigurations"),
    "BackupSession": (CORE_GROUP, "backupsessions"),
    "Snapshot": (STORAGE_GROUP, "snapshots"),
}
"""The kinds trigger/pause/resume touch. Naming them here spares these commands importing every model
(the registry): the CLI starts in about 0.2 s instead of 0.8 s. A test keeps them equal to the registry's."""


def by_kind(kind: str) -> type[NamespacedResource]:
    group, plural = EVERYDAY_KINDS[kind]
    return create_namespaced_resource(group, "v1alpha1", kind, plural)


class CliError(click.ClickException):
    """A user-facing failure: one line on stderr, exit code 1."""


class UsageFailure(CliError):
    """A request that cannot be right (unknown session or kind): exit code 2, as click's usage errors."""

    exit_code = 2


# ------------------------------------------------------------------ connection
def resolve_kubeconfig(explicit: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--kubeconfig``, else the first existing file of $KUBECONFIG, else ~/.kube/config, else ``kubestash up``'s."""
    if explicit is not None:
        return explicit
    env = os.environ if env is None else env
    for entry in (env.get("KUBECONFIG") or "").split(os.pathsep):
        if entry and Path(entry).expanduser().is_file():
            return Path(entry).expanduser()
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return home
    embedded = DEFAULT_DATA_DIR / "kubeconfig"
    if embedded.is_file():
        return embedded
    raise CliError(
        f"no kubeconfig: pass --kubeconfig, set KUBECONFIG, create {home}, or start `kubestash up` (writes {embedded})"
    )


@dataclass(frozen=True)
class Connection:
    config: SingleConfig
    namespace: str
    """``-n``, else the context's namespace."""

    def client(self) -> Client:
        return Client(config=self.config, namespace=self.namespace, field_manager="kubestash-cli")

    def async_client(self) -> AsyncClient:
        return AsyncClient(config=self.config, namespace=self.namespace, field_manager="kubestash-cli")

    def http(self) -> httpx.Client:
        return HttpClient(self.config, ConnectionParams())


def connect(kubeconfig: Path | None, context: str | None, namespace: str | None) -> Connection:
    path = resolve_kubeconfig(kubeconfig)
    try:
        config = KubeConfig.from_file(str(path)).get(context)
    except Exception as exc:
        raise CliError(f"cannot use kubeconfig {path}: {exc}") from exc
    if config is None:
        raise CliError(f"kubeconfig {path} has no current context; pass --context")
    return Connection(config, namespace or config.namespace)


def connection_options(fn: F) -> F:
    fn = click.option("--context", default=None, help="Kubeconfig context to use.")(fn)
    fn = click.option(
        "--kubeconfig",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        default=None,
        help="Kubeconfig (default: $KUBECONFIG, ~/.kube/config, then the one `kubestash up` writes).",
    )(fn)
    return click.option("-n", "--namespace", default=None, help="Namespace (default: the context's).")(fn)


@contextmanager
def api_errors() -> Iterator[None]:
    """API and connection failures as one-line messages instead of tracebacks."""
    try:
        yield
    except ApiError as exc:
        raise CliError(f"{exc.status.message or exc}") from exc
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the API server: {exc}") from exc


# ------------------------------------------------------------------ trigger
def session_names(bc: Mapping[str, Any]) -> list[str]:
    return [str(s.get("name")) for s in (bc.get("spec") or {}).get("sessions") or [] if s.get("name")]


def select_sessions(bc: Mapping[str, Any], wanted: str | None) -> list[str]:
    """The sessions to trigger: all, or the comma-separated ``--sessions`` (unknown ones are a usage error)."""
    meta = bc.get("metadata") or {}
    available = session_names(bc)
    if not wanted:
        return available
    chosen = list(dict.fromkeys(s.strip() for s in wanted.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise UsageFailure(
            f"BackupConfiguration {meta.get('namespace')}/{meta.get('name')} has no session "
            f"{', '.join(unknown)}; its sessions are: {', '.join(available) or '(none)'}"
        )
    return chosen


@click.command()
@click.argument("backupconfiguration")
@click.option("--sessions", default=None, help="Comma-separated sessions to trigger (default: all).")
@click.option("--wait", is_flag=True, help="Follow the BackupSessions until they finish; exit 1 unless all succeed.")
@click.option("--timeout", type=float, default=0, help="With --wait: give up after this many seconds (0: never).")
@connection_options
def trigger(
    backupconfiguration: str,
    sessions: str | None,
    wait: bool,
    timeout: float,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """Back up now: create a BackupSession for each (selected) session of a BackupConfiguration."""
    conn = connect(kubeconfig, context, namespace)
    client = conn.client()
    by_kind("BackupSession")  # registers the generic resource from_dict decodes to
    with api_errors():
        bc = _get_backup_configuration(client, backupconfiguration, conn.namespace)
        now = int(time.time())
        created = []
        for session in select_sessions(bc, sessions):
            obj = client.create(from_dict(backup_session_manifest(bc, session, now)))
            assert obj.metadata is not None and obj.metadata.name is not None
            click.echo(f"backupsession.{CORE_GROUP}/{obj.metadata.name} created (session {session})")
            created.append(obj.metadata.name)
    if wait:
        with api_errors():
            ok = wait_for_sessions(client, conn.namespace, created, timeout=timeout)
        raise click.exceptions.Exit(0 if ok else 1)


def _get_backup_configuration(client: Client, name: str, namespace: str) -> dict[str, Any]:
    try:
        bc = client.get(by_kind("BackupConfiguration"), name, namespace=namespace)
    except ApiError as exc:
        if exc.status.code == 404:
            raise CliError(f"BackupConfiguration {namespace}/{name} not found") from exc
        raise
    return as_dict(bc)


def as_dict(obj: Any) -> dict[str, Any]:
    """A lightkube object as plain JSON data (generic resources are typed as their base class)."""
    out: dict[str, Any] = obj.to_dict()
    return out


# ------------------------------------------------------------------ progress
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


def wait_for_sessions(
    client: Client, namespace: str, names: Sequence[str], *, timeout: float = 0, interval: float = 0.1
) -> bool:
    """Poll until every BackupSession is Succeeded, Failed or Skipped; True if all Succeeded.

    Polling rather than watching keeps one loop over two kinds (sessions and the Snapshots their status
    lists); progress lines are printed only when they change and at most once a second per session.
    """
    session_kind, snapshot_kind = by_kind("BackupSession"), by_kind("Snapshot")
    started = time.monotonic()
    pending = list(names)
    shown_phase: dict[str, str] = {}
    shown_progress: dict[str, tuple[float, list[str]]] = {}
    all_ok = True
    while pending:
        for name in list(pending):
            try:
                session = as_dict(client.get(session_kind, name, namespace=namespace))
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                click.echo(f"{name}: deleted before it finished")
                pending.remove(name)
                all_ok = False
                continue
            status = session.get("status") or {}
            phase = str(status.get("phase") or "Pending")
            mine = _snapshots(client, snapshot_kind, namespace, status)
            if phase in FINAL_PHASES:
                pending.remove(name)
                all_ok &= phase == "Succeeded"
                _report_final(name, phase, status, time.monotonic() - started, session, mine)
                continue
            if shown_phase.get(name) != phase:
                shown_phase[name] = phase
                click.echo(f"{name}: {phase}")
            lines = progress_lines(name, mine)
            last_time, last_lines = shown_progress.get(name, (0.0, []))
            now = time.monotonic()
            if lines and lines != last_lines and now - last_time >= 1.0:
                shown_progress[name] = (now, lines)
                for line in lines:
                    click.echo(line)
        if not pending:
            break
        if timeout and time.monotonic() - started > timeout:
            raise CliError(f"timed out after {format_seconds(timeout)} waiting for {', '.join(pending)}")
        time.sleep(interval)
    return all_ok


def _snapshots(client: Client, kind: Any, namespace: str, status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Snapshots a BackupSession's status lists (one per repository), skipping any already gone."""
    out = []
    for ref in status.get("snapshots") or []:
        try:
            out.append(as_dict(client.get(kind, str(ref.get("name")), namespace=namespace)))
        except ApiError as exc:
            if exc.status.code != 404:
                raise
    return out


def _report_final(
    name: str,
    phase: str,
    status: Mapping[str, Any],
    waited: float,
    session: Mapping[str, Any],
    snapshots: Sequence[Mapping[str, Any]],
) -> None:
    duration = status.get("duration") or format_seconds(waited)
    click.echo(f"{name}: {phase} in {duration}")
    if phase != "Succeeded":
        for reason in failure_reasons(session, snapshots):
            click.echo(f"  {reason}")


# ------------------------------------------------------------------ pause / resume
def _set_paused(backupconfiguration: str, paused: bool, conn: Connection) -> None:
    client = conn.client()
    with api_errors():
        bc = _get_backup_configuration(client, backupconfiguration, conn.namespace)
        was = bool((bc.get("spec") or {}).get("paused"))
        client.patch(
            by_kind("BackupConfiguration"),
            backupconfiguration,
            {"spec": {"paused": paused}},
            namespace=conn.namespace,
            patch_type=PatchType.MERGE,
        )
    what = "paused" if paused else "resumed"
    where = f"BackupConfiguration {conn.namespace}/{backupconfiguration}"
    if was == paused:
        click.echo(f"{where} was already {'paused' if paused else 'running'}")
    else:
        click.echo(f"{where} {what}")


@click.command()
@click.argument("backupconfiguration")
@connection_options
def pause(backupconfiguration: str, namespace: str | None, kubeconfig: Path | None, context: str | None) -> None:
    """Pause a BackupConfiguration: no scheduled backups until resumed."""
    _set_paused(backupconfiguration, True, connect(kubeconfig, context, namespace))


@click.command()
@click.argument("backupconfiguration")
@connection_options
def resume(backupconfiguration: str, namespace: str | None, kubeconfig: Path | None, context: str | None) -> None:
    """Resume a paused BackupConfiguration."""
    _set_paused(backupconfiguration, False, connect(kubeconfig, context, namespace))


# ------------------------------------------------------------------ get
def find_kind(name: str) -> KindInfo:
    """A KubeStash kind by kind, plural, singular or short name, optionally ``.group`` qualified."""
    from kubestash.api.registry import KINDS

    wanted = name.lower()
    for info in KINDS:
        names = {info.kind.lower(), info.plural, info.singular, *info.short_names}
        if wanted in names or any(wanted == f"{n}.{info.group}" for n in names):
            return info
    known = ", ".join(sorted(info.plural for info in KINDS))
    raise UsageFailure(f"unknown kind {name!r}; KubeStash kinds are: {known}")


def resource_path(info: KindInfo, namespace: str | None, name: str | None) -> str:
    path = f"/apis/{info.group}/{info.version}"
    if info.namespaced and namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{info.plural}"
    return f"{path}/{name}" if name else path


def render_table(table: Mapping[str, Any], *, with_namespace: bool) -> str:
    """A server-side Table as ``kubectl get`` prints it: priority-0 columns, upper-case headers, aligned."""
    columns = [(i, c) for i, c in enumerate(table.get("columnDefinitions") or []) if not c.get("priority")]
    header = [str(c["name"]).upper() for _, c in columns]
    rows = []
    for row in table.get("rows") or []:
        cells = [_cell(row["cells"][i] if i < len(row["cells"]) else None) for i, _ in columns]
        if with_namespace:
            cells.insert(0, str((((row.get("object") or {}).get("metadata")) or {}).get("namespace") or ""))
        rows.append(cells)
    if with_namespace:
        header.insert(0, "NAMESPACE")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@click.command(name="get")
@click.argument("kind")
@click.argument("name", required=False)
@click.option("-A", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@connection_options
def get(
    kind: str,
    name: str | None,
    all_namespaces: bool,
    namespace: str | None,
    kubeconfig: Path | None,
    context: str | None,
) -> None:
    """List KubeStash objects with their printer columns."""
    info = find_kind(kind)
    if all_namespaces and name:
        raise UsageFailure("a name cannot be combined with --all-namespaces")
    conn = connect(kubeconfig, context, namespace)
    scope = None if all_namespaces else conn.namespace
    with api_errors(), conn.http() as http:
        resp = http.get(resource_path(info, scope, name), headers={"Accept": TABLE_ACCEPT})
        if resp.status_code == 404 and name:
            raise CliError(f'{info.plural}.{info.group} "{name}" not found')
        if resp.status_code >= 400:
            raise CliError(f"listing {info.plural}.{info.group} failed: {_message(resp)}")
        table = resp.json()
    if not table.get("rows"):
        where = "" if not info.namespaced else " in any namespace" if all_namespaces else f" in {scope} namespace"
        click.echo(f"No resources found{where}.", err=True)
        return
    click.echo(render_table(table, with_namespace=all_namespaces and info.namespaced))


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message") or resp.text)
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200]}"


COMMANDS = (trigger, pause, resume, get)
