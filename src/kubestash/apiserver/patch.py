"""PATCH bodies and field ownership: JSON patch, merge patch, strategic merge patch, server-side apply.

``kubectl`` picks the patch type and clients never see how the server applies
it, only the result, so each function here reproduces the observable rules of
kube-apiserver for one ``Content-Type``; request handlers pick the function
and turn :class:`PatchError` into a ``metav1.Status`` with its ``code``.

``application/json-patch+json``
    RFC 6902 via the ``jsonpatch`` library. A body that is not a list of
    operation objects is 400; an operation that cannot be applied (missing
    path, failed ``test``, unknown ``op``) is 422, as in kube-apiserver.

``application/merge-patch+json``
    RFC 7386: ``null`` deletes, objects merge, anything else replaces.

``application/strategic-merge-patch+json``
    kube-apiserver drives strategic merge from the Go struct tags of each
    built-in kind; this server has no such schemas, so it is a merge patch
    that also honours every directive ``kubectl apply`` (client-side) and
    ``kubectl patch`` send, so that none is ever stored as a field:
    ``$patch: replace|delete|merge`` (in maps and list items, and the
    ``{"$patch": "replace"}`` list marker), ``$retainKeys``,
    ``$setElementOrder/<list>`` and ``$deleteFromPrimitiveList/<list>``.
    Simplifications: lists of objects merge item by item on a merge key
    inferred per list: the key ``$setElementOrder`` or ``$patch: delete``
    items name, else a few well-known keys (``mountPath`` for volumeMounts,
    ``devicePath`` for volumeDevices, ``uid`` for ownerReferences, ``ip`` for
    hostAliases, ``containerPort``/``port`` for ports, ``type`` for
    conditions), else ``name``; a list whose items do not all carry the key is
    replaced. Lists of scalars are replaced, except ``finalizers`` and lists
    named by a ``$setElementOrder``/``$deleteFromPrimitiveList`` directive,
    which merge as sets. ``$setElementOrder`` puts the items it names first,
    in its order, then the other items in their current order (kube
    interleaves server-only items by their old positions).

``application/apply-patch+yaml`` (server-side apply)
    :func:`server_side_apply` merges the applied configuration into the live
    object and tracks ownership in ``metadata.managedFields`` in the real
    FieldsV1 encoding (see :mod:`kubestash.apiserver.managed_fields`), with
    kube's semantics: applied fields become owned by the applier; a field
    another manager owns that the apply would change is a conflict (409)
    unless forced, which transfers it; applying the same value shares
    ownership; fields the applier owned before but no longer applies are
    removed unless someone else owns them; the first apply to an object with
    no managedFields attributes its existing fields to ``before-first-apply``.
    :func:`record_update` does the bookkeeping for every other write.
    Simplifications: lists keyed by ``name`` are granular and every other list
    is atomic (kube uses each field's declared list type, e.g. ports keyed by
    ``containerPort`` and ``protocol``, finalizers as a set); maps are always
    granular; managers writing different apiVersions are compared path by
    path without conversion; ``null`` in an applied configuration removes the
    field (the applier still owns it); parents emptied by removing an
    applier's fields are removed unless someone owns them; live items missing
    from the applied list keep their place relative to the applied ones, but
    kube's exact interleaving is not reproduced.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch

from kubestash.apiserver.managed_fields import (
    IGNORED_PATHS,
    MERGE_KEY,
    MISSING,
    FieldPath,
    ManagedEntry,
    child,
    compare,
    fields_of,
    is_keyed_list,
    json_equal,
    path_exists,
    path_string,
    read_entries,
    remove_path,
    without_managed_fields,
    write_entries,
)

__all__ = [
    "BEFORE_FIRST_APPLY",
    "ApplyConflict",
    "FieldConflict",
    "PatchError",
    "fields_of",
    "json_patch",
    "merge_patch",
    "record_update",
    "server_side_apply",
    "strategic_merge_patch",
]

BEFORE_FIRST_APPLY = "before-first-apply"


class PatchError(ValueError):
    """A patch kube-apiserver would refuse; ``code`` is the HTTP status (400, 409 or 422)."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class FieldConflict:
    """One field an apply would change that another manager owns."""

    manager: str
    operation: str
    api_version: str
    subresource: str
    path: FieldPath

    @property
    def field(self) -> str:
        """The field as kube prints it, e.g. ``.spec.replicas``."""
        return path_string(self.path)

    @property
    def manager_description(self) -> str:
        """``"kubectl-client-side-apply" using v1`` for updaters, ``"name"`` for appliers."""
        return ManagedEntry(self.manager, self.operation, self.api_version, set(), None, self.subresource).describe()


def _conflict_message(conflicts: Sequence[FieldConflict]) -> str:
    if len(conflicts) == 1:
        c = conflicts[0]
        return f"Apply failed with 1 conflict: conflict with {c.manager_description}: {c.field}"
    by_manager: dict[str, list[str]] = {}
    for c in conflicts:
        by_manager.setdefault(c.manager_description, []).append(c.field)
    lines: list[str] = []
    for manager in sorted(by_manager):
        lines.append(f"conflicts with {manager}:")
        lines.extend(f"- {f}" for f in by_manager[manager])
    return f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)


class ApplyConflict(PatchError):
    """409: the apply would change fields other managers own; retry with ``force=true`` to take them."""

    def __init__(self, conflicts: Sequence[FieldConflict]) -> None:
        self.conflicts = tuple(conflicts)
        super().__init__(_conflict_message(self.conflicts), 409)

    def causes(self) -> list[dict[str, str]]:
        """``metav1.Status`` ``details.causes``, one ``FieldManagerConflict`` per field."""
        return [
            {"reason": "FieldManagerConflict", "message": f"conflict with {c.manager_description}", "field": c.field}
            for c in self.conflicts
        ]


# --------------------------------------------------------------------------- RFC 7386 merge patch


def _merge_into(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_into(result.get(key), value)
    return result


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; neither argument is modified."""
    return _merge_into(copy.deepcopy(target), patch)


# --------------------------------------------------------------------------- RFC 6902 JSON patch


def _describe_op(index: int, op: Mapping[str, Any]) -> str:
    target = str(op.get("path", "?"))
    if "from" in op:
        target = f"{op['from']} -> {target}"
    return f"operation {index} ({op.get('op', '?')} {target})"


def json_patch(target: dict[str, Any], operations: list[Any]) -> dict[str, Any]:
    """RFC 6902 JSON patch; ``target`` is not modified. 400 if malformed, 422 if an operation fails."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", 400)
    for index, op in enumerate(operations):
        if not isinstance(op, dict):
            raise PatchError(f"json patch operation {index} must be an object", 400)
    doc: Any = copy.deepcopy(target)
    for index, op in enumerate(operations):
        # One operation at a time, so errors can name the failing one (messages never echo the document).
        try:
            doc = jsonpatch.apply_patch(doc, [op], in_place=True)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(f"testing value {op.get('path')} failed: test failed", 422) from None
        except (jsonpatch.JsonPatchPathNotFound, jsonpatch.JsonPointerException):
            raise PatchError(f"json patch {_describe_op(index, op)} failed: path not found", 422) from None
        except jsonpatch.JsonPatchException as err:
            raise PatchError(f"json patch {_describe_op(index, op)} failed: {err}", 422) from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            raise PatchError(f"json patch {_describe_op(index, op)} is invalid", 422) from None
    if not isinstance(doc, dict):
        raise PatchError("json patch result must be a JSON object", 422)
    return doc


# --------------------------------------------------------------------------- strategic merge patch

_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVE_PREFIX = "$deleteFromPrimitiveList/"
_MERGED_SCALAR_LISTS = frozenset({"finalizers"})
_KNOWN_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
}


class _Deleted:
    """A map removed by ``$patch: delete``."""


_DELETED = _Deleted()


def _bad(message: str) -> PatchError:
    return PatchError(message, 400)


def _string_list(value: Any, directive: str) -> list[Any]:
    if not isinstance(value, list):
        raise _bad(f"{directive} must be a list")
    return value


def _smp_map(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any] | _Deleted:
    """Apply ``patch`` to ``target`` (a private copy, mutated) honouring the directives."""
    directive = patch.get("$patch", "merge")
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        target = {}
    elif directive != "merge":
        raise _bad(f"Unknown patch type: {directive}, expected one of merge, replace or delete")
    retain = patch.get("$retainKeys")
    if retain is not None and not (isinstance(retain, list) and all(isinstance(k, str) for k in retain)):
        raise _bad("$retainKeys must be a list of strings")
    orders: dict[str, list[Any]] = {}
    deletions: dict[str, list[Any]] = {}
    plain: dict[str, Any] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith(_ORDER_PREFIX):
            orders[key[len(_ORDER_PREFIX) :]] = _string_list(value, key)
        elif key.startswith(_DELETE_PRIMITIVE_PREFIX):
            deletions[key[len(_DELETE_PRIMITIVE_PREFIX) :]] = _string_list(value, key)
        else:
            plain[key] = value
    for key, value in plain.items():
        if value is None:
            target.pop(key, None)
            continue
        current = target.get(key, MISSING)
        if isinstance(value, dict):
            merged = _smp_map(current if isinstance(current, dict) else {}, value)
            if isinstance(merged, _Deleted):
                target.pop(key, None)
            else:
                target[key] = merged
        elif isinstance(value, list):
            target[key] = _smp_list(key, current, value, orders.get(key), deletions.get(key))
        else:
            target[key] = copy.deepcopy(value)
    for key in dict.fromkeys([*orders, *deletions]):
        if key not in plain and isinstance(target.get(key), list):
            target[key] = _smp_list(key, target[key], [], orders.get(key), deletions.get(key))
    if retain is not None:
        target = {k: v for k, v in target.items() if k in retain}
    return target


def _fresh(item: Any) -> Any:
    """A new list item: directives stripped, ``null`` fields dropped."""
    if isinstance(item, dict):
        return _smp_map({}, item)
    return copy.deepcopy(item)


def _is_replace_marker(item: Any) -> bool:
    return isinstance(item, dict) and item == {"$patch": "replace"}


def _hashable(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _reorder(items: list[Any], order: list[Any], key_of: Callable[[Any], Any]) -> list[Any]:
    rank = {_hashable(key_of(entry)): i for i, entry in enumerate(order)}
    named = sorted((it for it in items if _hashable(key_of(it)) in rank), key=lambda it: rank[_hashable(key_of(it))])
    return named + [it for it in items if _hashable(key_of(it)) not in rank]


def _merge_key(field: str, patch_items: list[Any], order: list[Any] | None, current: list[Any]) -> str | None:
    candidates: list[str] = []
    if order and all(isinstance(o, dict) and len(o) == 1 for o in order):
        keys = {next(iter(o)) for o in order}
        if len(keys) == 1:
            candidates.append(keys.pop())
    for item in patch_items:
        if isinstance(item, dict) and item.get("$patch") == "delete":
            rest = [k for k in item if k != "$patch"]
            if len(rest) == 1:
                candidates.append(rest[0])
    candidates.extend(_KNOWN_MERGE_KEYS.get(field, ()))
    candidates.append(MERGE_KEY)
    for key in candidates:
        if all(isinstance(i, dict) and key in i for i in [*patch_items, *current]):
            return key
    return None


def _smp_list(
    field: str, current: Any, patch_items: list[Any], order: list[Any] | None, deletions: list[Any] | None
) -> list[Any]:
    live: list[Any] = current if isinstance(current, list) else []
    if any(_is_replace_marker(i) for i in patch_items):
        return [f for f in (_fresh(i) for i in patch_items if not _is_replace_marker(i)) if not isinstance(f, _Deleted)]
    maps = [i for i in patch_items if isinstance(i, dict)]
    if maps and len(maps) != len(patch_items):  # mixed scalars and objects: nothing to merge by
        return [f for f in (_fresh(i) for i in patch_items) if not isinstance(f, _Deleted)]
    if not maps and (patch_items or not any(isinstance(i, dict) for i in live)):
        if order is None and deletions is None and field not in _MERGED_SCALAR_LISTS:
            return copy.deepcopy(patch_items)
        out = [v for v in live if not any(json_equal(v, d) for d in deletions or [])]
        for value in patch_items:
            if not any(json_equal(value, v) for v in out):
                out.append(copy.deepcopy(value))
        return _reorder(out, order, lambda v: v) if order is not None else out
    key = _merge_key(field, patch_items, order, live)
    if key is None:
        return [f for f in (_fresh(i) for i in patch_items) if not isinstance(f, _Deleted)]
    out = list(live)
    for item in patch_items:
        index = next((n for n, it in enumerate(out) if json_equal(it.get(key), item[key])), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del out[index]
            continue
        merged = _smp_map(out[index] if index is not None else {}, item)
        if isinstance(merged, _Deleted):
            continue
        if index is None:
            out.append(merged)
        else:
            out[index] = merged
    if order is not None:
        # Order entries are ``{key: value}`` stubs, items are full objects: both reduce to the key's value.
        out = _reorder(out, order, lambda x: x.get(key) if isinstance(x, dict) else x)
    return out


def strategic_merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Strategic merge patch (see the module docstring for how it differs from kube's); inputs are not modified."""
    if not isinstance(patch, dict):
        raise _bad("strategic merge patch must be a JSON object")
    base = copy.deepcopy(target) if isinstance(target, dict) else {}
    out = _smp_map(base, patch)
    if isinstance(out, _Deleted):
        raise _bad("$patch: delete is not allowed at the top level of a patch")
    return out


# --------------------------------------------------------------------------- server-side apply

# Metadata the server owns and an applied configuration cannot set. A resourceVersion in the configuration is
# dropped, not used as a precondition: the merged object keeps the live one.
_SERVER_METADATA = (
    "managedFields",
    "resourceVersion",
    "creationTimestamp",
    "selfLink",
    "uid",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)


def _read_entries_lenient(obj: Any) -> list[ManagedEntry]:
    """Entries stored on ``obj``; unreadable ones count as none, as kube does for the live object."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return []
    try:
        return read_entries(meta.get("managedFields"))
    except ValueError:
        return []


def _apply_config(applied: Mapping[str, Any], ignore_status: bool, subresource: str) -> dict[str, Any]:
    config = copy.deepcopy(dict(applied))
    meta = config.get("metadata")
    if isinstance(meta, dict):
        for key in _SERVER_METADATA:
            meta.pop(key, None)
    if subresource == "status":
        kept = {k: v for k, v in config.items() if k in ("apiVersion", "kind", "status")}
        if isinstance(meta, dict):
            kept["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace")}
        return kept
    if ignore_status:
        config.pop("status", None)
    return config


def _apply_merge(live: Any, config: Any) -> Any:
    """``config`` merged over ``live``: maps field by field, keyed lists item by item, the rest replaced.

    ``live`` must be a private copy: it is reused (and changed) in the result; ``config`` is copied.
    """
    if isinstance(config, dict):
        out: dict[str, Any] = live if isinstance(live, dict) else {}
        for key, value in config.items():
            out[key] = _apply_merge(out.get(key, MISSING), value)
        return out
    live_ok = live is MISSING or live is None or live == [] or is_keyed_list(live)
    if is_keyed_list(config) and live_ok:
        return _merge_keyed(live if isinstance(live, list) else [], config)
    return copy.deepcopy(config)


def _merge_keyed(live: list[dict[str, Any]], config: list[dict[str, Any]]) -> list[Any]:
    """Merge two lists keyed by name, walking both like kube does.

    Live-only items are emitted as the walk reaches them, applied items in applied order; a shared item
    is emitted where the applied list puts it, so appliers can reorder their own items.
    """
    live_names = [item[MERGE_KEY] for item in live]
    config_names = [item[MERGE_KEY] for item in config]
    live_by_name = dict(zip(live_names, live, strict=True))
    in_config = set(config_names)
    shared = [name for name in config_names if name in live_by_name]
    next_shared = 0
    emitted: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(live) or ri < len(config):
        if li < len(live) and ri < len(config):
            if live_names[li] == config_names[ri]:
                name = config_names[ri]
                out.append(_apply_merge(live[li], config[ri]))
                emitted.add(name)
                next_shared += 1
                li += 1
                ri += 1
                continue
            if live_names[li] in in_config and next_shared < len(shared) and shared[next_shared] != live_names[li]:
                li += 1  # a shared item the applied list wants later: emitted when the walk gets there
                continue
        if li < len(live):
            if live_names[li] not in in_config:
                out.append(live[li])
                li += 1
                continue
            if live_names[li] in emitted:
                li += 1
                continue
        if ri < len(config):
            name = config_names[ri]
            out.append(_apply_merge(live_by_name.get(name, MISSING), config[ri]))
            emitted.add(name)
            if next_shared < len(shared) and shared[next_shared] == name:
                next_shared += 1
            ri += 1
    return out


def _strip_applied_nulls(target: Any, config: Any) -> None:
    """Remove the fields an applied configuration set to ``null``."""
    if isinstance(config, dict) and isinstance(target, dict):
        for key, value in config.items():
            if value is None:
                if key in target and target[key] is None:
                    del target[key]
            elif key in target:
                _strip_applied_nulls(target[key], value)
    elif is_keyed_list(config) and isinstance(target, list):
        by_name = {it.get(MERGE_KEY): it for it in target if isinstance(it, dict)}
        for item in config:
            if item[MERGE_KEY] in by_name:
                _strip_applied_nulls(by_name[item[MERGE_KEY]], item)


def _is_key_field(path: FieldPath) -> bool:
    return len(path) >= 2 and path[-1] == "f:" + MERGE_KEY and path[-2].startswith("k:")


def _prune(obj: dict[str, Any], candidates: set[FieldPath], owned: set[FieldPath]) -> None:
    """Remove the fields in ``candidates`` nobody in ``owned`` still needs, then parents left empty."""
    owned_prefixes = {p[:i] for p in owned for i in range(1, len(p))}
    removed: set[FieldPath] = set()
    for path in sorted(candidates, key=lambda p: (len(p), p)):
        if path in owned or path in owned_prefixes:
            continue
        if any(path[:i] in removed for i in range(1, len(path))):
            continue
        if _is_key_field(path):  # an item's key goes only with the item
            continue
        if not remove_path(obj, path):
            continue
        removed.add(path)
        for i in range(len(path) - 1, 0, -1):
            parent = path[:i]
            node: Any = obj
            for element in parent:
                node = child(node, element)
            if not isinstance(node, dict | list) or node or parent in owned or parent in owned_prefixes:
                break
            remove_path(obj, parent)
            removed.add(parent)


def server_side_apply(
    live: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    *,
    force: bool = False,
    now: str,
    ignore_status: bool = True,
    subresource: str = "",
) -> dict[str, Any]:
    """The object after ``manager`` applies ``applied`` to ``live`` (None: create), with managedFields updated.

    Raises :class:`ApplyConflict` (409) when the apply would change a field another manager owns and
    ``force`` is false; :class:`PatchError` (400) without a manager or with a non-object body.
    ``subresource="status"`` applies only ``status`` and records the entry for that subresource.
    """
    if not manager:
        raise _bad("PATCH, application/apply-patch+yaml requires fieldManager parameter")
    if not isinstance(applied, dict):
        raise _bad("apply patch must be an object")
    config = _apply_config(applied, ignore_status, subresource)
    current: dict[str, Any] = without_managed_fields(live) if live is not None else {}
    entries = _read_entries_lenient(live)
    if live is not None and not entries:
        existing = compare({}, current).changed - IGNORED_PATHS
        if existing:
            entries = [ManagedEntry(BEFORE_FIRST_APPLY, "Update", str(current.get("apiVersion") or ""), existing, now)]
    api_version = str(config.get("apiVersion") or current.get("apiVersion") or "")
    mine = ManagedEntry(manager, "Apply", api_version, fields_of(config) - IGNORED_PATHS, None, subresource)
    previous = next((e for e in entries if e.identity == mine.identity), None)
    others = [e for e in entries if e.identity != mine.identity]

    merged: dict[str, Any] = _apply_merge(copy.deepcopy(current), config)
    if previous is not None:
        owned = set(mine.fields).union(*(e.fields for e in others))
        _prune(merged, previous.fields - mine.fields, owned)

    changed = compare(current, merged).changed
    conflicts = [
        FieldConflict(e.manager, e.operation, e.api_version, e.subresource, path)
        for e in sorted(others, key=lambda e: e.manager)
        for path in sorted(e.fields & changed, key=path_string)
    ]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    _strip_applied_nulls(merged, config)
    for entry in others:
        entry.fields = {p for p in entry.fields - changed if path_exists(merged, p)}

    unchanged = (
        live is not None
        and previous is not None
        and previous.fields == mine.fields
        and previous.api_version == mine.api_version
        and json_equal(current, merged)
    )
    mine.time = previous.time if unchanged and previous is not None else now
    write_entries(merged, [*others, mine])
    return merged


def _is_reset(managed: Any) -> bool:
    """``managedFields: [{}]``, kube's way for a client to wipe all ownership."""
    return isinstance(managed, list) and len(managed) == 1 and managed[0] == {}


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    manager: str,
    *,
    operation: str = "Update",
    now: str,
    subresource: str = "",
) -> dict[str, Any]:
    """``new`` with managedFields updated for a create (``old`` None), update or non-apply patch by ``manager``.

    Fields added or changed become ``manager``'s and leave every other manager's set, so a later apply
    by someone else that changes them conflicts. As in kube-apiserver: managedFields sent in ``new`` are
    honoured when non-empty (``[{}]`` wipes them), otherwise the old object's are kept; an existing object
    that has no managedFields at all is not tracked by updates (its first apply starts tracking).
    """
    result = copy.deepcopy(new)
    meta = result.get("metadata")
    requested = meta.pop("managedFields", None) if isinstance(meta, dict) else None
    entries: list[ManagedEntry] = []
    if not _is_reset(requested):
        try:
            entries = read_entries(requested)
        except ValueError:
            entries = []
        if not entries and old is not None:
            entries = _read_entries_lenient(old)
    if old is not None and not entries:
        return result

    changed = compare(without_managed_fields(old) if old is not None else {}, result).changed - IGNORED_PATHS
    api_version = str(result.get("apiVersion") or "")
    mine = ManagedEntry(manager, operation, api_version, set(), None, subresource)
    previous = next((e for e in entries if e.identity == mine.identity), None)
    for entry in entries:
        if entry is not previous:
            entry.fields -= changed
    if changed:
        if previous is None:
            entries.append(mine)
            previous = mine
        previous.fields |= changed
        previous.time = now
        previous.api_version = api_version
    for entry in entries:
        entry.fields = {p for p in entry.fields if path_exists(result, p)}
    write_entries(result, entries)
    return result
