"""Admission for RestoreSession: what to restore must be named unambiguously."""

from __future__ import annotations

from kubestash.api.admission.common import check_addon, check_hooks, check_unique, check_usage
from kubestash.api.admission.errors import FieldError, required
from kubestash.api.admission.lookup import Lookup, get
from kubestash.api.restore import RestoreSession
from kubestash.api.storage import BackupStorage, Repository

LATEST = "latest"


def validate_restore_session(obj: RestoreSession, old: RestoreSession | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    ns = obj.namespace
    errors: list[FieldError] = []
    source = spec.data_source
    if source is None:
        errors.append(required("spec.dataSource", "the repository and snapshot to restore from"))
    else:
        if source.pitr is not None:
            if not source.pitr.target_time:
                errors.append(
                    required("spec.dataSource.pitr.targetTime", "target time is required for point-in-time recovery")
                )
            if not source.repository:
                errors.append(
                    required("spec.dataSource.repository", "repository is required for point-in-time recovery")
                )
        elif not source.snapshot:
            errors.append(required("spec.dataSource.snapshot", 'a snapshot name or "latest" is required'))
        elif source.snapshot == LATEST and not source.repository:
            errors.append(
                required("spec.dataSource.repository", 'repository is required to find the "latest" snapshot')
            )
        components = source.components or []
        errors += check_unique(((f"spec.dataSource.components[{i}]", c) for i, c in enumerate(components)), "component")
        errors += _check_repository_usage(obj, lookup)
    if spec.target is not None and not spec.target.kind:
        errors.append(required("spec.target.kind", "kind of the object to restore into"))
    errors += check_addon(spec.addon, "spec.addon")
    if spec.hooks is not None:
        errors += check_hooks(
            [("spec.hooks.preRestore", spec.hooks.pre_restore), ("spec.hooks.postRestore", spec.hooks.post_restore)],
            ns,
            lookup,
        )
    return errors


def _check_repository_usage(obj: RestoreSession, lookup: Lookup) -> list[FieldError]:
    """Restoring from another namespace's repository needs its BackupStorage to allow this namespace."""
    source = obj.spec.data_source
    if source is None or not source.repository or not source.namespace or source.namespace == obj.namespace:
        return []
    repo = get(lookup, Repository, source.namespace, source.repository)
    if repo is None or repo.spec.storage_ref is None:
        return []
    ref = repo.spec.storage_ref.model_copy(update={"namespace": repo.spec.storage_ref.namespace or repo.namespace})
    return check_usage(BackupStorage, ref, obj.namespace, "spec.dataSource.repository", lookup)
