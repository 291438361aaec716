"""The admission entry point: decode, default, validate -- one call for every kind.

The bundled API server, the cluster webhook and ``kubestash validate`` all call
:func:`review` (or :func:`admit`, which raises), so an object is accepted or
rejected identically everywhere. All problems are collected, not just the
first, so a user fixes a manifest in one round trip.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubestash.api.admission import addons, backup, hooks, restore, storage, verification
from kubestash.api.admission.common import check_metadata, mark_defaults
from kubestash.api.admission.errors import AdmissionError, FieldError, from_validation_error, invalid, required
from kubestash.api.admission.lookup import Lookup, StaticLookup
from kubestash.api.registry import KindInfo, lookup_kind
from kubestash.api.resource import Resource

Defaulter = Callable[[Any, Lookup], None]
Validator = Callable[[Any, Any, Lookup], list[FieldError]]


@dataclass(frozen=True)
class Rules:
    validate: Validator
    default: Defaulter | None = None


def _no_lookup(fn: Callable[[Any], None]) -> Defaulter:
    return lambda obj, _lookup: fn(obj)


RULES: dict[str, Rules] = {
    "BackupStorage": Rules(storage.validate_backup_storage, _no_lookup(storage.default_backup_storage)),
    "Repository": Rules(storage.validate_repository),
    "RetentionPolicy": Rules(storage.validate_retention_policy, _no_lookup(storage.default_retention_policy)),
    "Snapshot": Rules(lambda obj, old, lookup: []),
    "BackupConfiguration": Rules(backup.validate_backup_configuration, backup.default_backup_configuration),
    "BackupSession": Rules(backup.validate_backup_session),
    "BackupBatch": Rules(backup.validate_backup_batch, backup.default_backup_batch),
    "BackupBlueprint": Rules(backup.validate_backup_blueprint, _no_lookup(backup.default_backup_blueprint)),
    "RestoreSession": Rules(restore.validate_restore_session),
    "HookTemplate": Rules(hooks.validate_hook_template, _no_lookup(hooks.default_hook_template)),
    "BackupVerifier": Rules(verification.validate_backup_verifier),
    "BackupVerificationSession": Rules(verification.validate_backup_verification_session),
    "Addon": Rules(addons.validate_addon),
    "Function": Rules(addons.validate_function),
}


@dataclass
class Review:
    """The outcome of admission: the defaulted object (if it decoded) and every problem found."""

    kind: str
    name: str
    obj: Resource | None = None
    errors: list[FieldError] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors


def review(
    data: Mapping[str, Any] | Resource,
    lookup: Lookup | None = None,
    *,
    old: Mapping[str, Any] | Resource | None = None,
    namespace: str | None = None,
) -> Review:
    """Decode, default and validate one object; ``old`` is the stored object on update."""
    lookup = lookup if lookup is not None else StaticLookup(complete=False)
    raw: dict[str, Any] = data.to_wire() if isinstance(data, Resource) else dict(data)
    api_version = str(raw.get("apiVersion") or "")
    kind = str(raw.get("kind") or "")
    meta = raw.get("metadata")
    name = str(meta.get("name") or meta.get("generateName") or "") if isinstance(meta, dict) else ""
    info = lookup_kind(api_version, kind)
    if info is None:
        path = "kind" if kind else "apiVersion"
        reason = f'no KubeStash kind "{kind}" in "{api_version}"' if kind else "apiVersion and kind are required"
        return Review(kind, name, errors=[invalid(path, reason) if kind else required(path, reason)])
    if namespace and info.namespaced and isinstance(meta, dict) and not meta.get("namespace"):
        raw["metadata"] = {**meta, "namespace": namespace}
    try:
        obj = info.decode(raw)
    except ValidationError as exc:
        return Review(kind, name, errors=from_validation_error(exc))
    old_obj = _decode_old(info, old)
    rules = RULES[kind]
    if rules.default is not None:
        rules.default(obj, lookup)
    mark_defaults(obj)
    errors = check_metadata(obj, info.namespaced) + rules.validate(obj, old_obj, lookup)
    return Review(kind, name, obj, errors)


def admit(
    data: Mapping[str, Any] | Resource,
    lookup: Lookup | None = None,
    *,
    old: Mapping[str, Any] | Resource | None = None,
    namespace: str | None = None,
) -> Resource:
    """Like :func:`review`, but return the defaulted object or raise :class:`AdmissionError`."""
    result = review(data, lookup, old=old, namespace=namespace)
    if result.obj is None or result.errors:
        raise AdmissionError(result.kind, result.name, result.errors)
    return result.obj


def _decode_old(info: KindInfo, old: Mapping[str, Any] | Resource | None) -> Resource | None:
    if old is None or isinstance(old, Resource):
        return old
    return info.decode(dict(old))
