"""What happens to an object on create, update, patch and delete: kube-apiserver's rules.

The HTTP layer parses requests; the store persists; this module decides:
metadata that the server owns (uid, creationTimestamp, generation,
resourceVersion, managedFields), the status subresource split, admission
(KubeStash's rules for our kinds, the CRD schema for other custom kinds),
optimistic concurrency, finalizers and the start of cascading deletion.
"""

from __future__ import annotations

import copy
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from kubestash.api.admission import review
from kubestash.api.admission.errors import FieldError
from kubestash.api.admission.errors import required as required_field
from kubestash.api.registry import is_kubestash_api_version
from kubestash.apiserver import patch as patching
from kubestash.apiserver.errors import ApiError, already_exists, bad_request, invalid, not_found
from kubestash.apiserver.lookup import StoreLookup
from kubestash.apiserver.resources import ResourceRegistry, ResourceType, from_crd
from kubestash.apiserver.schema import admit_custom, unknown_fields, validate_crd
from kubestash.apiserver.store import AlreadyExists, Conflict, NotFound, Store

PatchType = Literal["json", "merge", "strategic", "apply"]
Propagation = Literal["Background", "Foreground", "Orphan"]
FieldValidation = Literal["Strict", "Warn", "Ignore"]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_OWNED = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteOptions:
    dry_run: bool = False
    field_manager: str = ""
    field_validation: FieldValidation = "Strict"


@dataclass
class Result:
    obj: dict[str, Any]
    created: bool = False
    warnings: tuple[str, ...] = ()


class ObjectManager:
    def __init__(self, store: Store, registry: ResourceRegistry) -> None:
        self.store = store
        self.registry = registry
        self.lookup = StoreLookup(store)

    # ------------------------------------------------------------------ reads
    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rt.key, namespace, name)
        if obj is None:
            raise not_found(rt.plural, rt.group, name)
        return obj

    # ---------------------------------------------------------------- create
    def create(
        self,
        rt: ResourceType,
        namespace: str,
        body: dict[str, Any],
        opts: WriteOptions,
        *,
        managed_fields: list[Any] | None = None,
    ) -> Result:
        """Create; ``managed_fields`` carries ownership already computed by a server-side apply."""
        obj = self._check_type_meta(rt, body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        self._check_namespace(rt, namespace, meta)
        if rt.namespaced:
            self._require_namespace(namespace)
        if not meta.get("name"):
            prefix = meta.get("generateName")
            if not prefix:
                raise invalid(
                    rt.kind, rt.group, "", [required_field("metadata.name", "name or generateName is required")]
                )
            meta["name"] = prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
        for key in (*_SERVER_OWNED, "resourceVersion", "managedFields"):
            meta.pop(key, None)
        if managed_fields:
            meta["managedFields"] = managed_fields
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if rt.status_subresource and rt.group:
            obj.pop("status", None)
        warnings = self._admit(rt, obj, None, opts, status_only=False)
        if opts.field_manager:
            obj = patching.record_update(None, obj, opts.field_manager, now=now_rfc3339())
        if opts.dry_run:
            return Result(obj, created=True, warnings=warnings)
        if rt.key == "namespaces":
            obj.setdefault("status", {})["phase"] = "Active"
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        try:
            stored = self.store.create(rt.key, namespace if rt.namespaced else "", meta["name"], obj)
        except AlreadyExists:
            raise already_exists(rt.plural, rt.group, meta["name"]) from None
        self._after_write(rt, stored)
        return Result(stored, created=True, warnings=warnings)

    # ---------------------------------------------------------------- update
    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: dict[str, Any],
        opts: WriteOptions,
        *,
        subresource: str | None = None,
    ) -> Result:
        body = self._check_type_meta(rt, body)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        self._check_namespace(rt, namespace, meta)
        old = self.get(rt, namespace, name)
        return self._replace(rt, namespace, name, old, body, opts, subresource=subresource)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        patch_type: PatchType,
        body: Any,
        opts: WriteOptions,
        *,
        subresource: str | None = None,
        force: bool = False,
    ) -> Result:
        old = self.store.get(rt.key, namespace if rt.namespaced else "", name)
        if patch_type == "apply":
            if not isinstance(body, dict):
                raise bad_request("apply patch must be an object")
            if not opts.field_manager:
                raise bad_request("PATCH, application/apply-patch+yaml requires fieldManager parameter")
            self._check_type_meta(rt, body)
            if old is None:
                if subresource:
                    raise not_found(rt.plural, rt.group, name)
                body.setdefault("metadata", {})["name"] = name
                applied = patching.server_side_apply(
                    None, body, opts.field_manager, force=force, now=now_rfc3339(), ignore_status=rt.status_subresource
                )
                return self.create(
                    rt,
                    namespace,
                    applied,
                    WriteOptions(opts.dry_run, "", opts.field_validation),
                    managed_fields=(applied.get("metadata") or {}).get("managedFields"),
                )
            new = patching.server_side_apply(
                old,
                body,
                opts.field_manager,
                force=force,
                now=now_rfc3339(),
                ignore_status=rt.status_subresource and subresource != "status",
                subresource=subresource or "",
            )
            opts = WriteOptions(opts.dry_run, "", opts.field_validation)
        else:
            if old is None:
                raise not_found(rt.plural, rt.group, name)
            if patch_type == "json":
                if not isinstance(body, list):
                    raise bad_request("json patch must be a list of operations")
                new = patching.json_patch(old, body)
            elif not isinstance(body, dict):
                raise bad_request("patch must be a JSON object")
            elif patch_type == "strategic" and rt.schema is not None:
                # Custom resources do not support strategic merge patch in kube-apiserver either.
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources; use merge or json patch",
                )
            elif patch_type == "merge":
                new = patching.merge_patch(old, body)
            else:
                new = patching.strategic_merge_patch(old, body)
        return self._replace(rt, namespace, name, old, new, opts, subresource=subresource)

    def _replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        old: dict[str, Any],
        new: dict[str, Any],
        opts: WriteOptions,
        *,
        subresource: str | None,
    ) -> Result:
        """Write ``new`` over ``old``; a resourceVersion in ``new`` is a precondition (409 if stale)."""
        expected = str((new.get("metadata") or {}).get("resourceVersion") or "") or None
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise self._conflict(rt, name)
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = old.get("apiVersion", rt.api_version), old.get("kind", rt.kind)
        status_only = subresource == "status"
        if status_only:
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            if "managedFields" in (new.get("metadata") or {}):
                merged["metadata"]["managedFields"] = new["metadata"]["managedFields"]
            new = merged
        elif rt.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for key in _SERVER_OWNED:
            if key in old["metadata"]:
                meta[key] = old["metadata"][key]
            else:
                meta.pop(key, None)
        meta["name"] = name
        if rt.namespaced:
            meta["namespace"] = namespace
        if old["metadata"].get("deletionTimestamp") and len(meta.get("finalizers") or []) > len(
            old["metadata"].get("finalizers") or []
        ):
            raise ApiError(
                422,
                "Invalid",
                f'{rt.plural} "{name}" is being deleted; no new finalizers can be added',
                name=name,
                group=rt.group,
                kind=rt.kind,
            )
        if _body(new) != _body(old):
            meta["generation"] = int(old["metadata"].get("generation") or 1) + 1
        warnings = self._admit(rt, new, old, opts, status_only=status_only)
        if opts.field_manager:
            new = patching.record_update(old, new, opts.field_manager, now=now_rfc3339(), subresource=subresource or "")
        if opts.dry_run:
            return Result(new, warnings=warnings)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            deleted = self._remove(rt, namespace, name, expected)
            return Result(deleted, warnings=warnings)
        if _unchanged(old, new):
            return Result(old, warnings=warnings)  # kube-apiserver does not persist no-op writes either
        try:
            stored = self.store.update(rt.key, namespace if rt.namespaced else "", name, new, expected_rv=expected)
        except Conflict:
            raise self._conflict(rt, name) from None
        except NotFound:
            raise not_found(rt.plural, rt.group, name) from None
        self._after_write(rt, stored)
        return Result(stored, warnings=warnings)

    # ---------------------------------------------------------------- delete
    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        *,
        propagation: Propagation | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        old = self.get(rt, namespace, name)
        meta = old["metadata"]
        pre = preconditions or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise self._conflict(rt, name)
        if dry_run:
            return old
        if rt.key == "namespaces":
            return self._terminate_namespace(old)
        policy = propagation or "Background"
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if finalizers:
            if meta.get("deletionTimestamp") and finalizers == meta.get("finalizers"):
                return old
            updated = copy.deepcopy(old)
            updated["metadata"]["finalizers"] = finalizers
            updated["metadata"].setdefault("deletionTimestamp", now_rfc3339())
            updated["metadata"].setdefault("deletionGracePeriodSeconds", 0)
            stored = self.store.update(rt.key, _ns(rt, namespace), name, updated)
            self._after_write(rt, stored)
            return stored
        return self._remove(rt, namespace, name, None)

    def _remove(self, rt: ResourceType, namespace: str, name: str, expected: str | None) -> dict[str, Any]:
        try:
            deleted = self.store.delete(rt.key, _ns(rt, namespace), name, expected_rv=expected)
        except NotFound:
            raise not_found(rt.plural, rt.group, name) from None
        except Conflict:
            raise self._conflict(rt, name) from None
        if rt.key == "customresourcedefinitions.apiextensions.k8s.io":
            self._uninstall_crd(deleted)
        return deleted

    def _terminate_namespace(self, ns: dict[str, Any]) -> dict[str, Any]:
        if ns["metadata"].get("deletionTimestamp"):
            return ns
        updated = copy.deepcopy(ns)
        updated["metadata"]["deletionTimestamp"] = now_rfc3339()
        updated["metadata"]["deletionGracePeriodSeconds"] = 0
        updated.setdefault("status", {})["phase"] = "Terminating"
        return self.store.update("namespaces", "", ns["metadata"]["name"], updated)

    # -------------------------------------------------------------- helpers
    def _check_type_meta(self, rt: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        api_version = body.get("apiVersion") or rt.api_version
        kind = body.get("kind") or rt.kind
        if api_version != rt.api_version or kind != rt.kind:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({rt.api_version})"
                if api_version != rt.api_version
                else f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        body["apiVersion"], body["kind"] = api_version, kind
        return body

    def _check_namespace(self, rt: ResourceType, namespace: str, meta: dict[str, Any]) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        given = meta.get("namespace")
        if given and given != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = namespace

    def _require_namespace(self, namespace: str) -> None:
        ns = self.store.get("namespaces", "", namespace)
        if ns is None:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found', name=namespace, kind="namespaces")
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    def _conflict(self, rt: ResourceType, name: str) -> ApiError:
        resource = f"{rt.plural}.{rt.group}" if rt.group else rt.plural
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            name=name,
            group=rt.group,
            kind=rt.plural,
        )

    def _admit(
        self,
        rt: ResourceType,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        opts: WriteOptions,
        *,
        status_only: bool,
    ) -> tuple[str, ...]:
        """Schema (CRDs), then KubeStash's rules for our kinds; mutates ``obj`` with defaults."""
        name = str(obj["metadata"].get("name") or "")
        warnings: tuple[str, ...] = ()
        if rt.schema is not None:
            unknown = unknown_fields(obj, rt.schema)
            if unknown and opts.field_validation == "Strict":
                raise invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [FieldError(p, f'unknown field "{p}"', "FieldValueNotSupported") for p in unknown],
                )
            if unknown and opts.field_validation == "Warn":
                warnings = tuple(f'unknown field "{p}"' for p in unknown)
            errors = admit_custom(obj, rt.schema)
            if errors:
                raise invalid(rt.kind, rt.group, name, errors)
        if rt.key == "customresourcedefinitions.apiextensions.k8s.io":
            errors = validate_crd(obj)
            if errors:
                raise invalid(rt.kind, rt.group, name, errors)
        if is_kubestash_api_version(rt.api_version) and not status_only:
            result = review(obj, self.lookup, old=old, namespace=obj["metadata"].get("namespace"))
            if result.errors:
                raise invalid(rt.kind, rt.group, name, result.errors)
            assert result.obj is not None
            admitted = result.obj.to_wire()
            obj.clear()
            obj.update(admitted)
        return warnings

    def _after_write(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.key == "customresourcedefinitions.apiextensions.k8s.io":
            self.install_crd(obj)

    def install_crd(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        self.registry.remove(spec.get("group", ""), (spec.get("names") or {}).get("plural", ""))
        for rt in from_crd(crd):
            self.registry.add(rt)
        if not crd.get("metadata", {}).get("deletionTimestamp"):
            self._set_crd_established(crd)

    def _set_crd_established(self, crd: dict[str, Any]) -> None:
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        names = (crd.get("spec") or {}).get("names") or {}
        now = now_rfc3339()
        updated = copy.deepcopy(crd)
        updated["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now,
                },
            ],
        }
        self.store.update("customresourcedefinitions.apiextensions.k8s.io", "", crd["metadata"]["name"], updated)

    def _uninstall_crd(self, crd: dict[str, Any]) -> None:
        """Deleting a CRD deletes every object of its kind, as kube-apiserver does."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        self.registry.remove(group, plural)
        key = f"{plural}.{group}"
        for obj in self.store.list_objects(key):
            meta = obj["metadata"]
            self.store.delete(key, meta.get("namespace") or "", meta["name"])


def _ns(rt: ResourceType, namespace: str) -> str:
    return namespace if rt.namespaced else ""


def _body(obj: dict[str, Any]) -> dict[str, Any]:
    """Everything that counts for ``generation``: all but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for resourceVersion and managedFields timestamps: a write that changes nothing."""

    def comparable(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        meta["managedFields"] = [
            {k: v for k, v in entry.items() if k != "time"} for entry in meta.get("managedFields") or []
        ]
        return {**obj, "metadata": meta}

    return comparable(old) == comparable(new)
