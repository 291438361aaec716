"""CustomResourceDefinitions for every KubeStash kind, generated from the pydantic models.

The CRDs are derived, never hand-written, so the schema the API server enforces
can never drift from the models the CLI, admission and controllers decode with.
A drift test compares ``deploy/crds/`` with this module's output.

Pydantic emits JSON Schema (draft 2020-12); Kubernetes accepts only a
*structural* OpenAPI v3 subset. The conversion below:

* inlines every ``$ref`` (Kubernetes has no references) and rejects recursion;
* turns ``Optional[X]`` (``anyOf: [X, null]``) into X -- absent and null are the
  same to Kubernetes, which prunes nulls of non-nullable fields;
* turns ``int | str`` into ``x-kubernetes-int-or-string``;
* turns free-form objects (``dict[str, Any]``) and models that keep unknown
  fields (:class:`~kubestash.api.base.K8sModel`) into
  ``x-kubernetes-preserve-unknown-fields`` so the API server does not prune
  what the user wrote;
* drops ``title``, ``additionalProperties: false`` (Kubernetes prunes instead)
  and defaults that mean "unset" (``null`` and ``""``), while keeping real
  defaults, which the API server applies like KubeStash's ``+kubebuilder:default``;
* refuses any keyword it does not know, so a new model feature fails loudly
  here instead of producing a CRD the API server rejects.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kubestash.api.manifests import dump_yaml
from kubestash.api.registry import KINDS, KUBESTASH_GROUPS, KindInfo

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"

CRD_LABELS = {"app.kubernetes.io/name": "kubestash"}
"""Lets ``kubectl get crd -l app.kubernetes.io/name=kubestash`` find (and uninstall) them all."""

# Keywords copied as they are: each is valid in Kubernetes' JSONSchemaProps with the same meaning.
_PASSTHROUGH = frozenset(
    {
        "description",
        "type",
        "format",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "multipleOf",
        "minProperties",
        "maxProperties",
        "required",
    }
)

_TYPE_META_DESCRIPTIONS = {
    "apiVersion": "Versioned schema of this object; the API server converts unrecognized values.",
    "kind": "The REST resource this object represents, in CamelCase.",
}


class SchemaError(ValueError):
    """A model uses a JSON Schema feature that has no structural CRD equivalent."""


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of a top-level kind."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs: dict[str, Any] = raw.pop("$defs", {})
    schema = _Converter(defs, model.__name__).convert(raw, ())
    properties = schema.setdefault("properties", {})
    for name, description in _TYPE_META_DESCRIPTIONS.items():
        properties[name] = {"description": description, "type": "string"}
    # Kubernetes validates metadata itself and forbids CRDs from constraining it (beyond name).
    properties["metadata"] = {"type": "object"}
    ordered: dict[str, Any] = _sorted(schema)
    return ordered


class _Converter:
    def __init__(self, defs: dict[str, Any], root: str) -> None:
        self._defs = defs
        self._root = root

    def _fail(self, path: tuple[str, ...], message: str) -> SchemaError:
        return SchemaError(f"{self._root}{''.join('.' + p for p in path)}: {message}")

    def convert(self, node: dict[str, Any], path: tuple[str, ...], refs: tuple[str, ...] = ()) -> dict[str, Any]:
        if "$ref" in node:
            name = str(node["$ref"]).rsplit("/", 1)[-1]
            if name in refs:
                raise self._fail(path, f"recursive model {name} cannot be expressed without $ref")
            if name not in self._defs:
                raise self._fail(path, f"unresolved $ref {node['$ref']}")
            # Keywords beside the reference (the field's own description, default) win over the model's.
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            return self.convert({**self._defs[name], **siblings}, path, (*refs, name))

        for combinator in ("anyOf", "oneOf", "allOf"):
            if combinator in node:
                return self._convert_union(node, combinator, path, refs)

        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "title":
                continue
            if key == "default":
                if value is not None and value != "":
                    out["default"] = copy.deepcopy(value)
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                # Draft 2020-12 gives the bound; OpenAPI v3.0 wants the bound plus a flag.
                out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
                out[key] = True
            elif key == "properties":
                out["properties"] = {name: self.convert(sub, (*path, name), refs) for name, sub in value.items()}
            elif key == "items":
                if not isinstance(value, dict):
                    raise self._fail(path, "tuple-typed arrays are not structural")
                out["items"] = self.convert(value, (*path, "[]"), refs)
            elif key == "additionalProperties":
                if value is True or value == {}:
                    out[PRESERVE] = True
                elif isinstance(value, dict):
                    out["additionalProperties"] = self.convert(value, (*path, "*"), refs)
                # False: Kubernetes prunes unknown fields; strict validation reports them.
            elif key in _PASSTHROUGH:
                out[key] = copy.deepcopy(value)
            else:
                raise self._fail(path, f"JSON Schema keyword {key!r} has no CRD equivalent")

        if isinstance(out.get("type"), list):
            raise self._fail(path, f"multiple types {out['type']} are not structural")
        is_object = "properties" in out or PRESERVE in out or "additionalProperties" in out
        if is_object and out.setdefault("type", "object") != "object":
            raise self._fail(path, f"properties on a {out['type']!r}")
        if "type" not in out and "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
        if "type" not in out and INT_OR_STRING not in out:
            # `Any`: accept any value and keep it.
            out[PRESERVE] = True
        return out

    def _convert_union(
        self, node: dict[str, Any], combinator: str, path: tuple[str, ...], refs: tuple[str, ...]
    ) -> dict[str, Any]:
        rest = {k: v for k, v in node.items() if k != combinator}
        options = [o for o in node[combinator] if o != {"type": "null"}]
        if combinator == "allOf" and len(options) > 1:
            raise self._fail(path, "allOf of several schemas is not supported")
        if len(options) == 1:
            # The field's keywords (description, default) win over those of the type.
            return self.convert({**options[0], **rest}, path, refs)
        if sorted(o.get("type", "") for o in options) == ["integer", "string"] and all(len(o) == 1 for o in options):
            return self._int_or_string(rest, path)
        raise self._fail(path, f"{combinator} of {options} is not structural")

    def _int_or_string(self, rest: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {INT_OR_STRING: True}
        for key, value in rest.items():
            if key == "description":
                out[key] = value
            elif key == "default":
                if value is not None and value != "":
                    out[key] = copy.deepcopy(value)
            elif key != "title":
                raise self._fail(path, f"keyword {key!r} on an int-or-string")
        return out


def _sorted(value: Any) -> Any:
    """Sort mapping keys at every level, as controller-gen does, so output is stable and diffable.

    String enums are sorted too: ``Literal["Ready", "NotReady"]`` and ``Literal["NotReady", "Ready"]``
    compare equal, so pydantic may hand either order to whichever model asks first in a process.
    """
    if isinstance(value, dict):
        return {
            key: sorted(value[key])
            if key == "enum" and all(isinstance(v, str) for v in value[key])
            else _sorted(value[key])
            for key in sorted(value)
        }
    if isinstance(value, list):
        return [_sorted(item) for item in value]
    return value


def crd_for(info: KindInfo) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of one kind."""
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)

    version: dict[str, Any] = {"name": info.version, "served": True, "storage": True}
    if info.columns:
        version["additionalPrinterColumns"] = [
            {"name": c.name, "type": c.type, "jsonPath": c.json_path} for c in info.columns
        ]
    version["schema"] = {"openAPIV3Schema": openapi_schema(info.model)}
    if info.status_subresource:
        version["subresources"] = {"status": {}}

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": dict(CRD_LABELS)},
        "spec": {
            "group": info.group,
            "names": names,
            "scope": info.scope,
            "versions": [version],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every kind's CRD, in registry order."""
    return [crd_for(info) for info in KINDS]


def crd_file_name(info: KindInfo) -> str:
    """``<group>_<plural>.yaml``, controller-gen's naming, e.g. ``storage.kubestash.com_backupstorages.yaml``."""
    return f"{info.group}_{info.plural}.yaml"


def write_crds(directory: Path) -> list[Path]:
    """Write one file per CRD into ``directory``; stale KubeStash CRD files there are removed.

    Only files named like ours (``<kubestash group>_*.yaml``) are ever removed, so a
    renamed kind leaves no orphan behind and unrelated files are left alone.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for info in KINDS:
        path = directory / crd_file_name(info)
        path.write_text(dump_yaml([crd_for(info)]), encoding="utf-8")
        written.append(path)
    keep = {p.name for p in written}
    for group in KUBESTASH_GROUPS:
        for stale in sorted(directory.glob(f"{group}_*.yaml")):
            if stale.name not in keep:
                stale.unlink()
    return written
