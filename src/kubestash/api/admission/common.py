"""Checks shared by several kinds: names, schedules, usage policies, addons, hooks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from kubestash.api.admission.errors import FieldError, duplicate, forbidden, invalid, not_supported, required
from kubestash.api.admission.lookup import Lookup, get, usage_allowed
from kubestash.api.hooks import HookTemplate
from kubestash.api.resource import Resource
from kubestash.api.schedule import schedule_error
from kubestash.api.shared import AddonInfo, HookInfo, ObjectReference, SchedulerSpec, UsagePolicy
from kubestash.api.storage import BackupStorage, RetentionPolicy

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace")


def check_metadata(obj: Resource, namespaced: bool) -> list[FieldError]:
    errors: list[FieldError] = []
    meta = obj.metadata
    if not meta.name and not meta.generate_name:
        errors.append(required("metadata.name", "name or generateName is required"))
    elif meta.name and (len(meta.name) > 253 or not _DNS1123_SUBDOMAIN.match(meta.name)):
        errors.append(
            invalid(
                "metadata.name",
                f'"{meta.name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric '
                "characters, '-' or '.', and must start and end with an alphanumeric character",
            )
        )
    if meta.namespace:
        if not namespaced:
            errors.append(forbidden("metadata.namespace", f"{obj.KIND} is cluster-scoped; remove the namespace"))
        elif len(meta.namespace) > 63 or not _DNS1123_LABEL.match(meta.namespace):
            errors.append(invalid("metadata.namespace", f'"{meta.namespace}": not a valid namespace name'))
    return errors


def check_scheduler(scheduler: SchedulerSpec | None, path: str) -> list[FieldError]:
    if scheduler is None:
        return [required(path, "a scheduler with a cron schedule is required")]
    errors: list[FieldError] = []
    reason = schedule_error(scheduler.schedule)
    if reason is not None:
        errors.append(invalid(f"{path}.schedule", reason))
    if scheduler.concurrency_policy is not None and scheduler.concurrency_policy not in CONCURRENCY_POLICIES:
        errors.append(not_supported(f"{path}.concurrencyPolicy", scheduler.concurrency_policy, CONCURRENCY_POLICIES))
    return errors


def check_usage_selector(policy: UsagePolicy | None, path: str = "spec.usagePolicy") -> list[FieldError]:
    if (
        policy is not None
        and policy.allowed_namespaces.from_ == "Selector"
        and policy.allowed_namespaces.selector is None
    ):
        return [
            required(
                f"{path}.allowedNamespaces.selector", 'selector cannot be empty for usage policy of type "Selector"'
            )
        ]
    return []


UsageGuarded = BackupStorage | RetentionPolicy | HookTemplate
"""Kinds whose ``spec.usagePolicy`` decides which namespaces may refer to them."""


def check_usage(
    model: type[UsageGuarded], ref: ObjectReference, user_namespace: str, path: str, lookup: Lookup
) -> list[FieldError]:
    """The referenced object's usagePolicy must admit ``user_namespace``.

    A reference to an object that does not exist (yet) is not an admission
    error: ``kubectl apply -f dir/`` creates objects in file order, and the
    controllers report a missing dependency in status.
    """
    owner_ns = ref.namespace or user_namespace
    target: UsageGuarded | None = get(lookup, model, owner_ns, ref.name)
    if target is None:
        return []
    if usage_allowed(target.spec.usage_policy, owner_ns, user_namespace, lookup) is False:
        return [
            forbidden(
                path,
                f'namespace "{user_namespace}" is not allowed to refer {model.KIND} {owner_ns}/{ref.name}; '
                "check its spec.usagePolicy",
            )
        ]
    return []


def check_unique(names: Iterable[tuple[str, str]], what: str) -> list[FieldError]:
    """``names`` are (path, name) pairs; report every repeat at its own path."""
    seen: set[str] = set()
    errors: list[FieldError] = []
    for path, name in names:
        if name in seen:
            errors.append(duplicate(path, f'{what} "{name}" is used more than once'))
        seen.add(name)
    return errors


def check_addon(addon: AddonInfo | None, path: str) -> list[FieldError]:
    if addon is None:
        return [required(path, "addon name and at least one task are required")]
    errors: list[FieldError] = []
    if not addon.name:
        errors.append(required(f"{path}.name", "addon name is required"))
    tasks = addon.tasks or []
    if not tasks:
        errors.append(required(f"{path}.tasks", "at least one task is required"))
    for i, task in enumerate(tasks):
        if not task.name:
            errors.append(required(f"{path}.tasks[{i}].name", "task name is required"))
    errors += check_unique(((f"{path}.tasks[{i}].name", t.name) for i, t in enumerate(tasks) if t.name), "task")
    return errors


def check_hooks(
    hooks: Sequence[tuple[str, Sequence[HookInfo] | None]], namespace: str, lookup: Lookup
) -> list[FieldError]:
    """``hooks`` are (path, hook list) pairs such as ("spec.hooks.preRestore", [...])."""
    errors: list[FieldError] = []
    for path, infos in hooks:
        for i, hook in enumerate(infos or []):
            hook_path = f"{path}[{i}]"
            if not hook.name:
                errors.append(required(f"{hook_path}.name", "hook name is required"))
            if hook.hook_template is None:
                errors.append(required(f"{hook_path}.hookTemplate", "a hook must refer to a HookTemplate"))
                continue
            errors += check_usage(HookTemplate, hook.hook_template, namespace, f"{hook_path}.hookTemplate", lookup)
        errors += check_unique(((f"{path}[{i}].name", h.name) for i, h in enumerate(infos or []) if h.name), "hook")
    return errors


def mark_defaults(model: BaseModel) -> None:
    """Record schema defaults as set, so they are stored like CRD defaulting stores them.

    Fields with a non-empty default that the user left out are marked as set
    (``to_wire`` then emits them), recursively through nested models, lists
    and maps. This is exactly what kube-apiserver's structural defaulting does
    with the ``default`` values in our generated CRDs.
    """
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if name not in model.model_fields_set and value not in (None, "") and not field.exclude:
            setattr(model, name, value)
        for child in _children(value):
            mark_defaults(child)


def _children(value: object) -> Iterable[BaseModel]:
    if isinstance(value, BaseModel):
        yield value
    elif isinstance(value, list):
        yield from (v for v in value if isinstance(v, BaseModel))
    elif isinstance(value, dict):
        yield from (v for v in value.values() if isinstance(v, BaseModel))


def check_immutable_spec(obj: Resource, old: Resource | None) -> list[FieldError]:
    if old is not None and getattr(old, "spec", None) != getattr(obj, "spec", None):
        return [forbidden("spec", f"{obj.KIND} spec is immutable")]
    return []
