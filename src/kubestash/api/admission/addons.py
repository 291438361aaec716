"""Admission for Addon and Function (cluster-scoped catalog objects)."""

from __future__ import annotations

from kubestash.api.addons import Addon, Function
from kubestash.api.admission.common import check_unique
from kubestash.api.admission.errors import FieldError, required
from kubestash.api.admission.lookup import Lookup


def validate_addon(obj: Addon, old: Addon | None, lookup: Lookup) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.spec
    if not spec.backup_tasks and not spec.restore_tasks:
        errors.append(required("spec", "at least one of spec.backupTasks or spec.restoreTasks is required"))
    for field, tasks in (("backupTasks", spec.backup_tasks), ("restoreTasks", spec.restore_tasks)):
        for i, task in enumerate(tasks or []):
            path = f"spec.{field}[{i}]"
            if not task.name:
                errors.append(required(f"{path}.name", "task name is required"))
            if not task.function:
                errors.append(required(f"{path}.function", "the Function that runs this task"))
        named = ((f"spec.{field}[{i}].name", t.name) for i, t in enumerate(tasks or []) if t.name)
        errors += check_unique(named, "task")
    return errors


def validate_function(obj: Function, old: Function | None, lookup: Lookup) -> list[FieldError]:
    if not obj.spec.image:
        return [required("spec.image", "the container image that runs this function")]
    return []
