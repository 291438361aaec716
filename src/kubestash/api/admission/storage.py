"""Admission for storage.kubestash.com: BackupStorage, Repository, RetentionPolicy, Snapshot."""

from __future__ import annotations

from kubestash.api.admission.common import check_usage_selector
from kubestash.api.admission.errors import FieldError, duplicate, forbidden, invalid, not_supported, required
from kubestash.api.admission.lookup import Lookup
from kubestash.api.durations import parse_retention_period
from kubestash.api.shared import UsagePolicy
from kubestash.api.storage import (
    PROVIDERS,
    BackupStorage,
    FailedSnapshotsKeepPolicy,
    Repository,
    RetentionPolicy,
)

_LOCAL_OWN_FIELDS = {"mountPath", "subPath", "maxConnections"}


# ---------------------------------------------------------------- BackupStorage
def default_backup_storage(obj: BackupStorage) -> None:
    spec = obj.spec
    if spec.usage_policy is None:
        spec.usage_policy = UsagePolicy()
    storage = spec.storage
    if storage.s3 is not None:
        for field in ("bucket", "endpoint", "prefix"):
            _trim(storage.s3, field)
    if storage.gcs is not None:
        for field in ("bucket", "prefix"):
            _trim(storage.gcs, field)
    if storage.azure is not None:
        _trim(storage.azure, "prefix")


def _trim(section: object, field: str) -> None:
    value = getattr(section, field)
    if isinstance(value, str) and value.endswith("/"):
        setattr(section, field, value.rstrip("/"))


def validate_backup_storage(obj: BackupStorage, old: BackupStorage | None, lookup: Lookup) -> list[FieldError]:
    errors = _check_backend(obj)
    errors += check_usage_selector(obj.spec.usage_policy)
    if obj.spec.default:
        others = [s.name for s in lookup.list(BackupStorage, obj.namespace) if s.spec.default and s.name != obj.name]
        if others:
            errors.append(
                forbidden(
                    "spec.default",
                    f"multiple default BackupStorages are not allowed within the same namespace "
                    f'("{others[0]}" is already the default)',
                )
            )
    if old is not None and old.status and old.status.repositories and old.spec.storage != obj.spec.storage:
        errors.append(forbidden("spec.storage", "BackupStorage is currently in use and cannot be modified"))
    location = storage_location(obj)
    if location is not None:
        for other in lookup.list(BackupStorage):
            if (other.namespace, other.name) != (obj.namespace, obj.name) and storage_location(other) == location:
                errors.append(
                    duplicate(
                        "spec.storage",
                        "no two BackupStorage should point to the same directory of the same bucket "
                        f"(BackupStorage {other.namespace}/{other.name} uses it)",
                    )
                )
                break
    return errors


def _check_backend(obj: BackupStorage) -> list[FieldError]:
    storage = obj.spec.storage
    path = "spec.storage"
    if not storage.provider:
        return [required(f"{path}.provider", "one of local, s3, gcs, azure")]
    if storage.provider not in PROVIDERS:
        return [not_supported(f"{path}.provider", storage.provider, PROVIDERS)]
    errors: list[FieldError] = []
    sections = {"local": storage.local, "s3": storage.s3, "gcs": storage.gcs, "azure": storage.azure}
    for name, section in sections.items():
        if section is not None and name != storage.provider:
            errors.append(
                forbidden(
                    f"{path}.{name}", f'provider is "{storage.provider}"; only {path}.{storage.provider} may be set'
                )
            )
    if sections[storage.provider] is None:
        return [*errors, required(f"{path}.{storage.provider}", f'provider "{storage.provider}" needs this section')]
    if storage.s3 is not None and storage.provider == "s3" and not storage.s3.bucket:
        errors.append(required(f"{path}.s3.bucket"))
    if storage.gcs is not None and storage.provider == "gcs" and not storage.gcs.bucket:
        errors.append(required(f"{path}.gcs.bucket"))
    if storage.azure is not None and storage.provider == "azure":
        if not storage.azure.storage_account:
            errors.append(required(f"{path}.azure.storageAccount"))
        if not storage.azure.container:
            errors.append(required(f"{path}.azure.container"))
    if storage.local is not None and storage.provider == "local":
        local = storage.local
        if not local.mount_path:
            errors.append(required(f"{path}.local.mountPath", "where the volume is mounted in backup jobs"))
        elif not local.mount_path.startswith("/"):
            errors.append(invalid(f"{path}.local.mountPath", f'"{local.mount_path}": must be an absolute path'))
        if not set(local.to_wire()) - _LOCAL_OWN_FIELDS:
            errors.append(
                required(f"{path}.local", "a volume source (hostPath, nfs, persistentVolumeClaim, ...) is required")
            )
    return errors


def storage_location(obj: BackupStorage) -> tuple[str, ...] | None:
    """The directory a BackupStorage points at, for the one-directory-one-storage rule."""
    storage = obj.spec.storage
    if storage.provider == "s3" and storage.s3 is not None:
        s3 = storage.s3
        return ("s3", s3.bucket or "", s3.region or "", (s3.prefix or "").strip("/"))
    if storage.provider == "gcs" and storage.gcs is not None:
        return ("gcs", storage.gcs.bucket or "", (storage.gcs.prefix or "").strip("/"))
    if storage.provider == "azure" and storage.azure is not None:
        az = storage.azure
        return ("azure", az.storage_account or "", az.container or "", (az.prefix or "").strip("/"))
    return None


# ------------------------------------------------------------------- Repository
def validate_repository(obj: Repository, old: Repository | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    errors: list[FieldError] = []
    if spec.storage_ref is None:
        errors.append(required("spec.storageRef", "the BackupStorage this repository lives in"))
    errors += check_directory(spec.path, "spec.path")
    if old is not None and old.spec.path != spec.path:
        errors.append(forbidden("spec.path", "repository path can not be updated"))
    unchanged = old is not None and old.spec.path == spec.path and old.spec.storage_ref == spec.storage_ref
    if spec.storage_ref is not None and spec.path and not unchanged:
        storage_ns = spec.storage_ref.namespace or obj.namespace
        for other in lookup.list(Repository):
            ref = other.spec.storage_ref
            if (
                (other.namespace, other.name) != (obj.namespace, obj.name)
                and ref is not None
                and (ref.namespace or other.namespace, ref.name) == (storage_ns, spec.storage_ref.name)
                and same_directory(other.spec.path, spec.path)
            ):
                errors.append(
                    duplicate(
                        "spec.path",
                        f'Repository {other.namespace}/{other.name} already uses path "{spec.path}" '
                        f"of BackupStorage {storage_ns}/{spec.storage_ref.name}",
                    )
                )
                break
    return errors


def check_directory(directory: str | None, path: str) -> list[FieldError]:
    if not directory:
        return [required(path, "directory inside the backend")]
    if ".." in directory.split("/"):
        return [invalid(path, f'"{directory}": must not contain ".."')]
    return []


def same_directory(a: str | None, b: str | None) -> bool:
    return (a or "").strip("/") == (b or "").strip("/")


# -------------------------------------------------------------- RetentionPolicy
def default_retention_policy(obj: RetentionPolicy) -> None:
    if obj.spec.usage_policy is None:
        obj.spec.usage_policy = UsagePolicy()
    if obj.spec.failed_snapshots is None:
        obj.spec.failed_snapshots = FailedSnapshotsKeepPolicy(last=1)


def validate_retention_policy(obj: RetentionPolicy, old: RetentionPolicy | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    errors = check_usage_selector(spec.usage_policy)
    if spec.max_retention_period is not None:
        try:
            parse_retention_period(spec.max_retention_period)
        except ValueError as exc:
            errors.append(invalid("spec.maxRetentionPeriod", str(exc)))
    elif spec.successful_snapshots is None:
        errors.append(required("spec", "one of spec.maxRetentionPeriod or spec.successfulSnapshots is required"))
    if spec.default:
        others = [p.name for p in lookup.list(RetentionPolicy, obj.namespace) if p.spec.default and p.name != obj.name]
        if others:
            errors.append(
                forbidden(
                    "spec.default",
                    f'multiple default RetentionPolicies are not allowed within the same namespace ("{others[0]}")',
                )
            )
    return errors
