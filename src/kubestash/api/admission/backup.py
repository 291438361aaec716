"""Admission for BackupConfiguration, BackupSession, BackupBatch and BackupBlueprint."""

from __future__ import annotations

from collections.abc import Sequence

from kubestash.api.admission.common import (
    check_addon,
    check_hooks,
    check_immutable_spec,
    check_scheduler,
    check_unique,
    check_usage,
    check_usage_selector,
)
from kubestash.api.admission.errors import FieldError, duplicate, forbidden, invalid, not_supported, required
from kubestash.api.admission.lookup import Lookup, usage_allowed
from kubestash.api.admission.storage import check_directory, same_directory
from kubestash.api.backup import (
    CORE_GROUP,
    BackendReference,
    BackupBatch,
    BackupBlueprint,
    BackupConfiguration,
    BackupSession,
    RepositoryInfo,
    SessionConfig,
)
from kubestash.api.resource import Resource
from kubestash.api.shared import ObjectReference, UsagePolicy
from kubestash.api.storage import BackupStorage, Repository, RetentionPolicy

INVOKER_KINDS = ("BackupConfiguration", "BackupBatch")


# ----------------------------------------------------------------- defaulting
def find_default(model: type[BackupStorage] | type[RetentionPolicy], namespace: str, lookup: Lookup) -> Resource | None:
    """The default object usable from ``namespace``: own namespace first, then Selector, then All."""
    candidates = [obj for obj in lookup.list(model) if obj.spec.default]

    def policy(obj: Resource) -> UsagePolicy | None:
        assert isinstance(obj, BackupStorage | RetentionPolicy)
        return obj.spec.usage_policy

    own = [o for o in candidates if o.namespace == namespace]
    if own:
        return own[0]
    for kind in ("Selector", "All"):
        for obj in candidates:
            p = policy(obj) or UsagePolicy()
            if p.allowed_namespaces.from_ == kind and usage_allowed(p, obj.namespace, namespace, lookup):
                return obj
    return None


def _ref(obj: Resource) -> ObjectReference:
    return ObjectReference(namespace=obj.namespace, name=obj.name)


def default_backends(
    backends: list[BackendReference] | None, namespace: str, lookup: Lookup
) -> list[BackendReference] | None:
    if not backends:
        storage = find_default(BackupStorage, namespace, lookup)
        if storage is None:
            return backends
        backends = [BackendReference(name="", storage_ref=_ref(storage))]
    for backend in backends:
        if backend.retention_policy is None:
            policy = find_default(RetentionPolicy, namespace, lookup)
            if policy is not None:
                backend.retention_policy = _ref(policy)
    return backends


def default_backup_configuration(obj: BackupConfiguration, lookup: Lookup) -> None:
    obj.spec.backends = default_backends(obj.spec.backends, obj.namespace, lookup)


def default_backup_batch(obj: BackupBatch, lookup: Lookup) -> None:
    obj.spec.backends = default_backends(obj.spec.backends, obj.namespace, lookup)


def default_backup_blueprint(obj: BackupBlueprint) -> None:
    if obj.spec.usage_policy is None:
        obj.spec.usage_policy = UsagePolicy()


# ---------------------------------------------------------- BackupConfiguration
def check_backends(
    backends: Sequence[BackendReference] | None, namespace: str, lookup: Lookup, path: str = "spec.backends"
) -> list[FieldError]:
    if not backends:
        if not lookup.complete:
            return []  # a default BackupStorage may exist where this object is applied
        reason = f'at least one backend is required (no default BackupStorage is usable from namespace "{namespace}")'
        return [required(path, reason)]
    errors = check_unique(((f"{path}[{i}].name", b.name) for i, b in enumerate(backends)), "backend name")
    for i, backend in enumerate(backends):
        if backend.storage_ref is None:
            errors.append(required(f"{path}[{i}].storageRef", "the BackupStorage of this backend"))
        else:
            errors += check_usage(BackupStorage, backend.storage_ref, namespace, f"{path}[{i}].storageRef", lookup)
        if backend.retention_policy is None:
            errors.append(required(f"{path}[{i}].retentionPolicy", "the RetentionPolicy of this backend"))
        else:
            ref = backend.retention_policy
            errors += check_usage(RetentionPolicy, ref, namespace, f"{path}[{i}].retentionPolicy", lookup)
    return errors


def check_session_config(session: SessionConfig, path: str, namespace: str, lookup: Lookup) -> list[FieldError]:
    errors = check_scheduler(session.scheduler, f"{path}.scheduler")
    hooks = session.hooks
    if hooks is not None:
        errors += check_hooks(
            [(f"{path}.hooks.preBackup", hooks.pre_backup), (f"{path}.hooks.postBackup", hooks.post_backup)],
            namespace,
            lookup,
        )
    return errors


def backend_for(repo: RepositoryInfo, backends: Sequence[BackendReference]) -> BackendReference | None:
    """The backend a repository lands on; an empty name means the only backend."""
    for backend in backends:
        if backend.name == repo.backend:
            return backend
    if not repo.backend and len(backends) == 1:
        return backends[0]
    return None


def check_repositories(
    repos: Sequence[RepositoryInfo] | None,
    path: str,
    backends: Sequence[BackendReference],
) -> list[FieldError]:
    if not repos:
        return [required(path, "at least one repository is required")]
    errors: list[FieldError] = []
    for j, repo in enumerate(repos):
        repo_path = f"{path}[{j}]"
        if not repo.name:
            errors.append(required(f"{repo_path}.name", "repository name is required"))
        if backends and backend_for(repo, backends) is None:
            names = ", ".join(f'"{b.name}"' for b in backends)
            errors.append(
                invalid(f"{repo_path}.backend", f'"{repo.backend}": no such backend in spec.backends (have {names})')
            )
        errors += check_directory(repo.directory, f"{repo_path}.directory")
    errors += check_unique(((f"{path}[{j}].name", r.name) for j, r in enumerate(repos) if r.name), "repository")
    return errors


def check_directories(
    sessions: Sequence[tuple[str, Sequence[RepositoryInfo] | None]], backends: Sequence[BackendReference]
) -> list[FieldError]:
    """Two different repositories must not share a directory of the same backend."""
    errors: list[FieldError] = []
    owner: dict[tuple[str, str], str] = {}
    for path, repos in sessions:
        for j, repo in enumerate(repos or []):
            backend = backend_for(repo, backends)
            if backend is None or not repo.directory:
                continue
            key = (backend.name, repo.directory.strip("/"))
            if key in owner and owner[key] != repo.name:
                errors.append(
                    duplicate(
                        f"{path}[{j}].directory",
                        f'repository "{owner[key]}" already uses directory "{repo.directory}" '
                        f'of backend "{backend.name}"',
                    )
                )
            owner.setdefault(key, repo.name)
    return errors


def check_existing_repositories(
    repos: Sequence[tuple[str, RepositoryInfo]],
    backends: Sequence[BackendReference],
    obj: BackupConfiguration,
    lookup: Lookup,
) -> list[FieldError]:
    """A repository name already taken must be the same repository; a path already taken must be ours."""
    errors: list[FieldError] = []
    existing = lookup.list(Repository, obj.namespace)
    all_repos = lookup.list(Repository)
    for path, repo in repos:
        backend = backend_for(repo, backends)
        if backend is None or backend.storage_ref is None:
            continue
        storage = (backend.storage_ref.namespace or obj.namespace, backend.storage_ref.name)
        same_name = next((r for r in existing if r.name == repo.name), None)
        if same_name is not None:
            ref = same_name.spec.storage_ref
            theirs = (ref.namespace or same_name.namespace, ref.name) if ref else None
            app = same_name.spec.app_ref
            target = obj.spec.target
            if theirs != storage or (
                app is not None and target is not None and (app.kind, app.name) != (target.kind, target.name)
            ):
                errors.append(
                    forbidden(
                        f"{path}.name",
                        f'Repository "{repo.name}" already exists for a different target or BackupStorage',
                    )
                )
                continue
        for other in all_repos:
            ref = other.spec.storage_ref
            if (
                other.name != repo.name
                and ref is not None
                and (ref.namespace or other.namespace, ref.name) == storage
                and same_directory(other.spec.path, repo.directory)
            ):
                errors.append(
                    duplicate(
                        f"{path}.directory",
                        f'Repository {other.namespace}/{other.name} already uses "{repo.directory}" '
                        f"in BackupStorage {storage[0]}/{storage[1]}",
                    )
                )
                break
    return errors


def validate_backup_configuration(
    obj: BackupConfiguration, old: BackupConfiguration | None, lookup: Lookup
) -> list[FieldError]:
    spec = obj.spec
    ns = obj.namespace
    errors: list[FieldError] = []
    if spec.target is not None and not spec.target.kind:
        errors.append(required("spec.target.kind", "kind of the object to back up"))
    backends = spec.backends or []
    errors += check_backends(spec.backends, ns, lookup)
    sessions = spec.sessions or []
    if not sessions:
        errors.append(required("spec.sessions", "at least one session is required"))
    errors += _check_session_names([s.name for s in sessions], "spec.sessions")
    for i, session in enumerate(sessions):
        path = f"spec.sessions[{i}]"
        errors += check_session_config(session, path, ns, lookup)
        errors += check_addon(session.addon, f"{path}.addon")
        errors += check_repositories(session.repositories, f"{path}.repositories", backends)
    errors += check_directories(
        [(f"spec.sessions[{i}].repositories", s.repositories) for i, s in enumerate(sessions)], backends
    )
    repos = [
        (f"spec.sessions[{i}].repositories[{j}]", repo)
        for i, s in enumerate(sessions)
        for j, repo in enumerate(s.repositories or [])
        if repo.name
    ]
    errors += check_existing_repositories(repos, backends, obj, lookup)
    return errors


def _check_session_names(names: Sequence[str], path: str) -> list[FieldError]:
    errors = [required(f"{path}[{i}].name", "session name is required") for i, n in enumerate(names) if not n]
    return errors + check_unique(((f"{path}[{i}].name", n) for i, n in enumerate(names) if n), "session")


# ------------------------------------------------------------------ BackupBatch
def validate_backup_batch(obj: BackupBatch, old: BackupBatch | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    ns = obj.namespace
    backends = spec.backends or []
    errors = check_backends(spec.backends, ns, lookup)
    targets = spec.targets or []
    if not targets:
        errors.append(required("spec.targets", "at least one target is required"))
    errors += [required(f"spec.targets[{i}].name") for i, t in enumerate(targets) if not t.name]
    errors += check_unique(((f"spec.targets[{i}].name", t.name) for i, t in enumerate(targets) if t.name), "target")
    target_names = {t.name for t in targets}
    sessions = spec.sessions or []
    if not sessions:
        errors.append(required("spec.sessions", "at least one session is required"))
    errors += _check_session_names([s.name for s in sessions], "spec.sessions")
    per_target: list[tuple[str, Sequence[RepositoryInfo] | None]] = []
    for i, session in enumerate(sessions):
        path = f"spec.sessions[{i}]"
        errors += check_session_config(session, path, ns, lookup)
        for k, target in enumerate(session.targets or []):
            tpath = f"{path}.targets[{k}]"
            if target.name not in target_names:
                errors.append(invalid(f"{tpath}.name", f'"{target.name}": not one of spec.targets'))
            errors += check_addon(target.addon, f"{tpath}.addon")
            errors += check_repositories(target.repositories, f"{tpath}.repositories", backends)
            per_target.append((f"{tpath}.repositories", target.repositories))
    errors += check_directories(per_target, backends)
    return errors


# ---------------------------------------------------------------- BackupSession
def validate_backup_session(obj: BackupSession, old: BackupSession | None, lookup: Lookup) -> list[FieldError]:
    errors: list[FieldError] = []
    invoker = obj.spec.invoker
    if invoker is None:
        errors.append(required("spec.invoker", "the BackupConfiguration or BackupBatch this session runs"))
    else:
        if invoker.kind not in INVOKER_KINDS:
            errors.append(not_supported("spec.invoker.kind", invoker.kind, INVOKER_KINDS))
        if invoker.api_group not in (None, "", CORE_GROUP):
            errors.append(not_supported("spec.invoker.apiGroup", invoker.api_group, (CORE_GROUP,)))
    if not obj.spec.session:
        errors.append(required("spec.session", "name of the session in the invoker"))
    return errors + check_immutable_spec(obj, old)


# -------------------------------------------------------------- BackupBlueprint
def validate_backup_blueprint(obj: BackupBlueprint, old: BackupBlueprint | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    errors = check_usage_selector(spec.usage_policy)
    template = spec.backup_configuration_template
    if template is None:
        return [*errors, required("spec.backupConfigurationTemplate", "backupConfigurationTemplate can not be empty")]
    path = "spec.backupConfigurationTemplate"
    # The template's namespace and names may be ${VARIABLES}; only check what needs no substitution.
    ns = template.namespace if template.namespace and "$" not in template.namespace else obj.namespace
    for i, backend in enumerate(template.backends or []):
        if backend.storage_ref is None:
            errors.append(required(f"{path}.backends[{i}].storageRef"))
            continue
        errors += check_usage(BackupStorage, backend.storage_ref, ns, f"{path}.backends[{i}].storageRef", lookup)
    sessions = template.sessions or []
    errors += _check_session_names([s.name for s in sessions], f"{path}.sessions")
    for i, session in enumerate(sessions):
        spath = f"{path}.sessions[{i}]"
        errors += check_scheduler(session.scheduler, f"{spath}.scheduler")
        errors += check_addon(session.addon, f"{spath}.addon")
        if not session.repositories:
            errors.append(required(f"{spath}.repositories", "at least one repository is required"))
    if spec.subjects is not None:
        for i, subject in enumerate(spec.subjects):
            if not subject.kind:
                errors.append(required(f"spec.subjects[{i}].kind"))
    return errors
