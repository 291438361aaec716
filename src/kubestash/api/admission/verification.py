"""Admission for BackupVerifier and BackupVerificationSession."""

from __future__ import annotations

from kubestash.api.admission.common import check_addon, check_immutable_spec, check_scheduler
from kubestash.api.admission.errors import FieldError, not_supported, required
from kubestash.api.admission.lookup import Lookup
from kubestash.api.verification import BackupVerificationSession, BackupVerifier


def validate_backup_verifier(obj: BackupVerifier, old: BackupVerifier | None, lookup: Lookup) -> list[FieldError]:
    spec = obj.spec
    errors: list[FieldError] = []
    if spec.restore_option is None:
        errors.append(required("spec.restoreOption", "how to restore the snapshot being verified"))
    else:
        errors += check_addon(spec.restore_option.addon_info, "spec.restoreOption.addonInfo")
    errors += check_scheduler(spec.scheduler, "spec.scheduler")
    if spec.type is None:
        errors.append(required("spec.type", "one of RestoreOnly, Query, Script"))
    elif spec.type == "Query":
        if not spec.query:
            errors.append(required("spec.query", "queries are required for verifier type Query"))
        if not spec.function:
            errors.append(required("spec.function", "a Function is required for verifier type Query"))
    elif spec.type == "Script":
        if spec.script is None or not spec.script.location:
            errors.append(required("spec.script.location", "script location is required for verifier type Script"))
        if not spec.function:
            errors.append(required("spec.function", "a Function is required for verifier type Script"))
    return errors


def validate_backup_verification_session(
    obj: BackupVerificationSession, old: BackupVerificationSession | None, lookup: Lookup
) -> list[FieldError]:
    errors: list[FieldError] = []
    invoker = obj.spec.invoker
    if invoker is None:
        errors.append(required("spec.invoker", "the BackupConfiguration whose backup is verified"))
    elif invoker.kind not in ("BackupConfiguration", "BackupBatch"):
        errors.append(not_supported("spec.invoker.kind", invoker.kind, ("BackupConfiguration", "BackupBatch")))
    return errors + check_immutable_spec(obj, old)
