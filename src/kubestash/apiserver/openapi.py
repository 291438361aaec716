"""The OpenAPI v3 documents kube-apiserver publishes, for the kinds the bundled server serves.

kubectl reads them for three things, so they must be shaped the way kubectl expects:

* ``kubectl explain`` finds a kind's schema in ``components.schemas`` by its
  ``x-kubernetes-group-version-kind`` and follows ``$ref``/``allOf`` into
  ``ObjectMeta``;
* ``kubectl apply``/``create``/``replace`` look up the PATCH operation of the
  object's group-version-kind: when it declares the ``fieldValidation`` query
  parameter, kubectl leaves field validation to the server. Without it kubectl
  would validate client-side against ``/openapi/v2``, which this server does not
  serve -- every PATCH, PUT and POST therefore declares it;
* the ``/openapi/v3`` index maps ``api/v1`` and ``apis/<group>/<version>`` to a
  document URL whose ``hash`` changes whenever the document does, which is what
  kubectl's disk cache keys on.

Schema names follow kube-apiserver: built-in kinds live under their Go package
(``io.k8s.api.core.v1.Pod``), custom kinds under the reversed group
(``com.kubestash.storage.v1alpha1.BackupStorage``). Built-in kinds are stored as
written, so their schema is free-form apart from the type and object metadata.
No ``/openapi/v2`` is needed: kubectl 1.37 explains from v3 and, given
``fieldValidation``, never asks for v2.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from kubestash.apiserver.resources import ResourceType

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{META}.ObjectMeta"
LIST_META = f"{META}.ListMeta"
GVK = "x-kubernetes-group-version-kind"
PRESERVE = "x-kubernetes-preserve-unknown-fields"

# Go packages of Kubernetes' own groups; everything else is named by its reversed group, as for CRDs.
_BUILTIN_PACKAGES = {
    "": "io.k8s.api.core",
    "apps": "io.k8s.api.apps",
    "batch": "io.k8s.api.batch",
    "events.k8s.io": "io.k8s.api.events",
    "rbac.authorization.k8s.io": "io.k8s.api.rbac",
    "storage.k8s.io": "io.k8s.api.storage",
    "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
}

_DESCRIPTIONS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object.",
    "kind": "Kind is a string value representing the REST resource this object represents, in CamelCase.",
    "metadata": "Standard object's metadata.",
    "listMetadata": "Standard list metadata.",
}

_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


# --------------------------------------------------------------------------- names
def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _wrapped_ref(name: str, description: str) -> dict[str, Any]:
    """A reference with its own description: OpenAPI 3.0 ignores siblings of ``$ref``, hence ``allOf``."""
    return {"allOf": [_ref(name)], "description": description}


def schema_name(rt: ResourceType, kind: str | None = None) -> str:
    """``io.k8s.api.core.v1.Pod``, ``com.kubestash.storage.v1alpha1.BackupStorage``: kube-apiserver's names."""
    package = _BUILTIN_PACKAGES.get(rt.group) if rt.schema is None else None
    if package is None:
        package = ".".join(reversed(rt.group.split(".")))
    return f"{package}.{rt.version}.{kind or rt.kind}"


def _gvk(rt: ResourceType, kind: str | None = None) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": kind or rt.kind}


def _gv_key(rt: ResourceType) -> str:
    """The key of a group-version in the ``/openapi/v3`` index: ``api/v1``, ``apis/apps/v1``."""
    return f"apis/{rt.group}/{rt.version}" if rt.group else f"api/{rt.version}"


def _operation_group(rt: ResourceType) -> str:
    """``CoreV1``, ``AppsV1``, ``RbacAuthorizationV1``, ``StorageKubestashComV1alpha1``: operationId infix."""
    group = rt.group.removesuffix(".k8s.io") if rt.group else "core"
    words = group.replace("-", ".").split(".")
    return "".join(w[:1].upper() + w[1:] for w in words) + rt.version[:1].upper() + rt.version[1:]


# --------------------------------------------------------------------------- meta types
def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description, "default": ""}


def _string_map(description: str) -> dict[str, Any]:
    return {"type": "object", "description": description, "additionalProperties": {"type": "string", "default": ""}}


def _int64(description: str) -> dict[str, Any]:
    return {"type": "integer", "format": "int64", "description": description}


def meta_schemas() -> dict[str, dict[str, Any]]:
    """ObjectMeta and the apimachinery types around it, as every group-version document carries them."""
    time_ref = f"{META}.Time"
    return {
        time_ref: {
            "type": "string",
            "format": "date-time",
            "description": "A timestamp in RFC 3339 form, serialized with second precision.",
        },
        f"{META}.FieldsV1": {
            "type": "object",
            "description": "The set of fields a manager owns, in the fieldsV1 trie format.",
        },
        f"{META}.ManagedFieldsEntry": {
            "type": "object",
            "description": "Which fields a field manager owns, and since when.",
            "properties": {
                "apiVersion": _string("Version of the object the fieldset applies to."),
                "fieldsType": _string('Format of fieldsV1; only "FieldsV1".'),
                "fieldsV1": _wrapped_ref(f"{META}.FieldsV1", "The owned fields."),
                "manager": _string("Name of the manager (the client's field manager)."),
                "operation": _string('"Apply" or "Update".'),
                "subresource": _string("Subresource the write went to; empty for the main resource."),
                "time": _wrapped_ref(time_ref, "When the fields were last changed."),
            },
        },
        f"{META}.OwnerReference": {
            "type": "object",
            "description": "Identifies an owning object; the owned object is garbage-collected with its owners.",
            "required": ["apiVersion", "kind", "name", "uid"],
            "properties": {
                "apiVersion": _string("API version of the owner."),
                "blockOwnerDeletion": {
                    "type": "boolean",
                    "description": "With foreground deletion, the owner waits for this object to be deleted first.",
                },
                "controller": {"type": "boolean", "description": "This owner is the managing controller."},
                "kind": _string("Kind of the owner."),
                "name": _string("Name of the owner."),
                "uid": _string("UID of the owner."),
            },
            "x-kubernetes-map-type": "atomic",
        },
        OBJECT_META: {
            "type": "object",
            "description": "Metadata every persisted object has.",
            "properties": {
                "annotations": _string_map("Unstructured key-value data kept with the object, not queryable."),
                "creationTimestamp": _wrapped_ref(time_ref, "When the object was created; set by the server."),
                "deletionGracePeriodSeconds": _int64("Seconds the object is given to terminate gracefully."),
                "deletionTimestamp": _wrapped_ref(
                    time_ref,
                    "When deletion was requested; set by the server. The object goes once finalizers are gone.",
                ),
                "finalizers": {
                    "type": "array",
                    "description": "Must be empty before the object is deleted from the store.",
                    "items": {"type": "string", "default": ""},
                    "x-kubernetes-list-type": "set",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "generateName": _string("Prefix for a server-generated name, used when name is empty."),
                "generation": _int64("Sequence number of the desired state; set by the server."),
                "labels": _string_map("Key-value pairs for organizing and selecting objects."),
                "managedFields": {
                    "type": "array",
                    "description": "Which field manager owns which fields; maintained by the server.",
                    "items": {"default": {}, **_ref(f"{META}.ManagedFieldsEntry")},
                },
                "name": _string("Unique within a namespace; required when creating, unless generateName is given."),
                "namespace": _string("Namespace of the object; empty for cluster-scoped kinds."),
                "ownerReferences": {
                    "type": "array",
                    "description": "Objects this object depends on; it is garbage-collected when they all go.",
                    "items": {"default": {}, **_ref(f"{META}.OwnerReference")},
                    "x-kubernetes-list-map-keys": ["uid"],
                    "x-kubernetes-list-type": "map",
                    "x-kubernetes-patch-merge-key": "uid",
                    "x-kubernetes-patch-strategy": "merge",
                },
                "resourceVersion": _string("Opaque version of the object, for optimistic concurrency and watches."),
                "selfLink": _string("Deprecated; not set."),
                "uid": _string("Unique identifier of this object in time and space; set by the server."),
            },
        },
        LIST_META: {
            "type": "object",
            "description": "Metadata of a list.",
            "properties": {
                "continue": _string("Token for the next page of a paginated list."),
                "remainingItemCount": _int64("Number of items after this page, when known."),
                "resourceVersion": _string("Version of the list, to watch from."),
                "selfLink": _string("Deprecated; not set."),
            },
        },
        f"{META}.StatusCause": {
            "type": "object",
            "description": "One reason a request failed, often tied to a field.",
            "properties": {
                "field": _string("Path of the field that caused the error, e.g. spec.sessions[0].name."),
                "message": _string("Human-readable description."),
                "reason": _string("Machine-readable reason, e.g. FieldValueRequired."),
            },
        },
        f"{META}.StatusDetails": {
            "type": "object",
            "description": "Details of a failure.",
            "properties": {
                "causes": {
                    "type": "array",
                    "description": "Every cause found.",
                    "items": {"default": {}, **_ref(f"{META}.StatusCause")},
                    "x-kubernetes-list-type": "atomic",
                },
                "group": _string("Group of the resource."),
                "kind": _string("Kind (or resource) the failure concerns."),
                "name": _string("Name of the object."),
                "retryAfterSeconds": {"type": "integer", "format": "int32", "description": "Seconds to wait."},
                "uid": _string("UID of the object."),
            },
        },
        f"{META}.Status": {
            "type": "object",
            "description": "The result of a call that does not return an object.",
            "properties": {
                "apiVersion": _string(_DESCRIPTIONS["apiVersion"]),
                "code": {"type": "integer", "format": "int32", "description": "HTTP status code."},
                "details": _wrapped_ref(f"{META}.StatusDetails", "Extended data about the failure."),
                "kind": _string(_DESCRIPTIONS["kind"]),
                "message": _string("Human-readable description."),
                "metadata": {"default": {}, **_wrapped_ref(LIST_META, _DESCRIPTIONS["listMetadata"])},
                "reason": _string("Machine-readable reason, e.g. NotFound."),
                "status": _string('"Success" or "Failure".'),
            },
            GVK: [{"group": "", "version": "v1", "kind": "Status"}],
        },
        f"{META}.Preconditions": {
            "type": "object",
            "description": "Conditions that must hold before a delete goes ahead.",
            "properties": {
                "resourceVersion": _string("The object must have this resource version."),
                "uid": _string("The object must have this UID."),
            },
        },
        f"{META}.DeleteOptions": {
            "type": "object",
            "description": "Options of a delete request.",
            "properties": {
                "apiVersion": _string(_DESCRIPTIONS["apiVersion"]),
                "dryRun": {
                    "type": "array",
                    "description": 'Only "All": validate but do not persist.',
                    "items": {"type": "string", "default": ""},
                    "x-kubernetes-list-type": "atomic",
                },
                "gracePeriodSeconds": _int64("Seconds before the object is deleted; 0 means immediately."),
                "kind": _string(_DESCRIPTIONS["kind"]),
                "orphanDependents": {"type": "boolean", "description": "Deprecated; use propagationPolicy."},
                "preconditions": _wrapped_ref(f"{META}.Preconditions", "Must hold for the delete to proceed."),
                "propagationPolicy": _string('How dependents are deleted: "Orphan", "Background" or "Foreground".'),
            },
        },
        f"{META}.Patch": {
            "type": "object",
            "description": "A patch body: JSON patch, merge patch, strategic merge patch or apply configuration.",
        },
    }


# --------------------------------------------------------------------------- kind schemas
def _kind_schema(rt: ResourceType) -> dict[str, Any]:
    if rt.schema is None:
        schema: dict[str, Any] = {
            "type": "object",
            "description": f"{rt.kind} is a Kubernetes kind; this server stores it as written.",
            "properties": {},
            PRESERVE: True,
        }
    else:
        schema = copy.deepcopy(dict(rt.schema))
        schema.setdefault("type", "object")
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "description": _DESCRIPTIONS["apiVersion"]}
    properties["kind"] = {"type": "string", "description": _DESCRIPTIONS["kind"]}
    properties["metadata"] = _wrapped_ref(OBJECT_META, _DESCRIPTIONS["metadata"])
    schema[GVK] = [_gvk(rt)]
    return schema


def _list_schema(rt: ResourceType) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"A list of {rt.kind} objects.",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _DESCRIPTIONS["apiVersion"]},
            "items": {"type": "array", "description": f"The {rt.plural}.", "items": _ref(schema_name(rt))},
            "kind": {"type": "string", "description": _DESCRIPTIONS["kind"]},
            "metadata": _wrapped_ref(LIST_META, _DESCRIPTIONS["listMetadata"]),
        },
        GVK: [_gvk(rt, rt.list_kind)],
    }


# --------------------------------------------------------------------------- paths
def _query(name: str, description: str, schema_type: str = "string") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": schema_type, "uniqueItems": True}
    return {"name": name, "in": "query", "description": description, "schema": schema}


_DRY_RUN = _query("dryRun", 'When "All", validate and admit the request but do not persist it.')
_FIELD_MANAGER = _query("fieldManager", "Name of the actor making the change, for managedFields.")
_FIELD_VALIDATION = _query(
    "fieldValidation",
    'How the server treats unknown and duplicate fields: "Ignore", "Warn" or "Strict" (the default).',
)
_FORCE = _query("force", "Take over fields other managers own (apply patches only).", "boolean")
_PRETTY = _query("pretty", "Indent the output.")
_LIST_QUERY = [
    _query("allowWatchBookmarks", "Ask for BOOKMARK watch events.", "boolean"),
    _query("continue", "Token from a previous page."),
    _query("fieldSelector", "Restrict the list by fields, e.g. metadata.name=x."),
    _query("labelSelector", "Restrict the list by labels."),
    _query("limit", "Maximum number of items in one page.", "integer"),
    _query("resourceVersion", "Which version of the collection to list or watch from."),
    _query("resourceVersionMatch", "How resourceVersion applies to a list."),
    _query("sendInitialEvents", "Start a watch with the current objects.", "boolean"),
    _query("timeoutSeconds", "Timeout of the list or watch call.", "integer"),
    _query("watch", "Stream changes instead of listing.", "boolean"),
]
_DELETE_QUERY = [
    _DRY_RUN,
    _query("gracePeriodSeconds", "Seconds before the object is deleted.", "integer"),
    _query("propagationPolicy", 'How dependents are deleted: "Orphan", "Background" or "Foreground".'),
]
_WRITE_QUERY = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _json_content(name: str) -> dict[str, Any]:
    return {media: {"schema": _ref(name)} for media in ("application/json", "application/yaml")}


def _responses(name: str, *codes: str) -> dict[str, Any]:
    described = {"200": "OK", "201": "Created", "202": "Accepted"}
    out: dict[str, Any] = {code: {"description": described[code], "content": _json_content(name)} for code in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _operation(
    rt: ResourceType,
    action: str,
    operation_id: str,
    description: str,
    *,
    response: str,
    codes: tuple[str, ...] = ("200",),
    query: list[dict[str, Any]] | None = None,
    body: str | None = None,
    patch: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [_operation_group(rt)[:1].lower() + _operation_group(rt)[1:]],
        "description": description,
        "operationId": operation_id,
        "responses": _responses(response, *codes),
        "x-kubernetes-action": action,
        GVK: _gvk(rt),
    }
    if query:
        op["parameters"] = list(query)
    if patch:
        types = _PATCH_TYPES if rt.schema is None else tuple(t for t in _PATCH_TYPES if "strategic" not in t)
        op["requestBody"] = {"content": {t: {"schema": _ref(f"{META}.Patch")} for t in types}, "required": True}
    elif body is not None:
        op["requestBody"] = {"content": _json_content(body), "required": True}
    return op


def _resource_paths(rt: ResourceType) -> dict[str, dict[str, Any]]:
    base = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    ident = _operation_group(rt)
    scope = "Namespaced" if rt.namespaced else ""
    kind_name = schema_name(rt)
    list_name = schema_name(rt, rt.list_kind)
    status_name = f"{META}.Status"
    verbs = set(rt.verbs)
    common = [_PRETTY]
    if rt.namespaced:
        collection = f"{base}/namespaces/{{namespace}}/{rt.plural}"
        common = [_path_param("namespace", "Object name and auth scope, such as for teams and projects"), _PRETTY]
    else:
        collection = f"{base}/{rt.plural}"
    name_param = _path_param("name", f"name of the {rt.kind}")

    paths: dict[str, dict[str, Any]] = {}
    coll: dict[str, Any] = {"parameters": common}
    if "list" in verbs:
        coll["get"] = _operation(
            rt,
            "list",
            f"list{ident}{scope}{rt.kind}",
            f"list or watch objects of kind {rt.kind}",
            response=list_name,
            query=_LIST_QUERY,
        )
    if "create" in verbs:
        coll["post"] = _operation(
            rt,
            "post",
            f"create{ident}{scope}{rt.kind}",
            f"create a {rt.kind}",
            response=kind_name,
            codes=("200", "201", "202"),
            query=_WRITE_QUERY,
            body=kind_name,
        )
    if "deletecollection" in verbs:
        coll["delete"] = _operation(
            rt,
            "deletecollection",
            f"delete{ident}Collection{scope}{rt.kind}",
            f"delete collection of {rt.kind}",
            response=status_name,
            query=_DELETE_QUERY + _LIST_QUERY,
            body=f"{META}.DeleteOptions",
        )
    paths[collection] = coll

    item: dict[str, Any] = {"parameters": [name_param, *common]}
    if "get" in verbs:
        item["get"] = _operation(
            rt, "get", f"read{ident}{scope}{rt.kind}", f"read the specified {rt.kind}", response=kind_name
        )
    if "update" in verbs:
        item["put"] = _operation(
            rt,
            "put",
            f"replace{ident}{scope}{rt.kind}",
            f"replace the specified {rt.kind}",
            response=kind_name,
            codes=("200", "201"),
            query=_WRITE_QUERY,
            body=kind_name,
        )
    if "delete" in verbs:
        item["delete"] = _operation(
            rt,
            "delete",
            f"delete{ident}{scope}{rt.kind}",
            f"delete a {rt.kind}",
            response=status_name,
            codes=("200", "202"),
            query=_DELETE_QUERY,
            body=f"{META}.DeleteOptions",
        )
    if "patch" in verbs:
        item["patch"] = _operation(
            rt,
            "patch",
            f"patch{ident}{scope}{rt.kind}",
            f"partially update the specified {rt.kind}",
            response=kind_name,
            codes=("200", "201"),
            query=[*_WRITE_QUERY, _FORCE],
            patch=True,
        )
    paths[f"{collection}/{{name}}"] = item

    if rt.status_subresource:
        status: dict[str, Any] = {"parameters": [name_param, *common]}
        status["get"] = _operation(
            rt,
            "get",
            f"read{ident}{scope}{rt.kind}Status",
            f"read status of the specified {rt.kind}",
            response=kind_name,
        )
        status["put"] = _operation(
            rt,
            "put",
            f"replace{ident}{scope}{rt.kind}Status",
            f"replace status of the specified {rt.kind}",
            response=kind_name,
            codes=("200", "201"),
            query=_WRITE_QUERY,
            body=kind_name,
        )
        status["patch"] = _operation(
            rt,
            "patch",
            f"patch{ident}{scope}{rt.kind}Status",
            f"partially update status of the specified {rt.kind}",
            response=kind_name,
            codes=("200", "201"),
            query=[*_WRITE_QUERY, _FORCE],
            patch=True,
        )
        paths[f"{collection}/{{name}}/status"] = status

    if rt.namespaced and "list" in verbs:
        paths[f"{base}/{rt.plural}"] = {
            "parameters": [_PRETTY],
            "get": _operation(
                rt,
                "list",
                f"list{ident}{rt.kind}ForAllNamespaces",
                f"list or watch objects of kind {rt.kind}",
                response=list_name,
                query=_LIST_QUERY,
            ),
        }
    return paths


# --------------------------------------------------------------------------- documents
def openapi_v3_group_version(types: list[ResourceType]) -> dict[str, Any]:
    """The OpenAPI 3.0 document of one group-version (``/openapi/v3/apis/<group>/<version>``)."""
    schemas: dict[str, Any] = meta_schemas()
    paths: dict[str, Any] = {}
    for rt in sorted(types, key=lambda t: t.plural):
        schemas[schema_name(rt)] = _kind_schema(rt)
        schemas[schema_name(rt, rt.list_kind)] = _list_schema(rt)
        paths.update(_resource_paths(rt))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0-kubestash"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"BearerToken": {"type": "apiKey", "in": "header", "name": "authorization"}},
        },
        "security": [{"BearerToken": []}],
    }


def group_versions(types: Iterable[ResourceType]) -> dict[str, list[ResourceType]]:
    """Served types by index key: ``api/v1``, ``apis/apps/v1``, ..."""
    out: dict[str, list[ResourceType]] = {}
    for rt in types:
        out.setdefault(_gv_key(rt), []).append(rt)
    return out


def document_hash(document: dict[str, Any]) -> str:
    """Stable over runs and dict ordering; changes whenever the document does (kubectl caches by it)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha512(canonical).hexdigest().upper()


def openapi_v3_root(registry_types: Iterable[ResourceType]) -> dict[str, Any]:
    """The ``/openapi/v3`` index: one entry per served group-version, each URL carrying its document's hash."""
    paths: dict[str, Any] = {}
    for key, types in sorted(group_versions(registry_types).items()):
        digest = document_hash(openapi_v3_group_version(types))
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}
