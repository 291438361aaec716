"""What kube-apiserver does to a custom resource with its CRD's structural schema, and the checks on CRDs themselves.

A custom resource goes through three steps, in this order, before it is stored:

1. **pruning** -- fields the schema does not declare are dropped (unless the node
   says ``x-kubernetes-preserve-unknown-fields``), and ``null`` values of
   non-nullable fields without a default are removed;
2. **defaulting** -- absent fields with a ``default`` get a copy of it, only
   inside objects that exist, and the copied default is itself defaulted;
3. **validation** -- type, enum, bounds, lengths, pattern, ``date-time`` format,
   item counts and ``required``, reported per field path.

This is hand-written rather than delegated to a JSON Schema library because
none of the interesting parts are JSON Schema: pruning and defaulting mutate the
object, ``x-kubernetes-int-or-string`` and ``x-kubernetes-preserve-unknown-fields``
are Kubernetes extensions, a ``null`` is *dropped* rather than rejected, and
errors must read like Kubernetes' (``spec.x: Invalid value: "string": spec.x in
body must be of type integer: "string"``) with our field paths
(``spec.sessions[0].name``, map keys as ``spec.labels[key]``).

Not implemented: CEL rules (``x-kubernetes-validations``), ``x-kubernetes-list-type``
uniqueness, ``anyOf``/``oneOf``/``allOf``/``not`` value validations and formats other
than ``date-time``; the KubeStash CRDs use none of them.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from kubestash.api.admission.errors import FieldError, duplicate, forbidden, invalid, not_supported, required

PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"
EMBEDDED = "x-kubernetes-embedded-resource"
TYPES = ("array", "boolean", "integer", "number", "object", "string")

_TYPE_META = ("apiVersion", "kind", "metadata")
"""Kept at the root (and in embedded resources) whatever the schema says; metadata is the server's business."""

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Schema = Mapping[str, Any]


# --------------------------------------------------------------------------- paths
def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def _map_key(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _shown(path: str) -> str:
    return path or "<root>"


# --------------------------------------------------------------------------- public API
def admit_custom(obj: dict[str, Any], schema: Schema) -> list[FieldError]:
    """Prune, default and validate ``obj`` (a whole custom resource) in place; return what is wrong with it."""
    _prune(obj, schema, "", mutate=True, dropped=None, type_meta=True)
    _default(obj, schema, type_meta=True)
    errors: list[FieldError] = []
    _validate(obj, schema, "", errors, type_meta=True)
    return errors


def unknown_fields(obj: Mapping[str, Any], schema: Schema) -> list[str]:
    """Paths of the fields pruning would drop, e.g. ``spec.foo`` -- what ``fieldValidation=Strict`` rejects.

    ``obj`` is not changed. Nulls that pruning removes are not unknown fields and are not listed.
    """
    dropped: list[str] = []
    _prune(obj, schema, "", mutate=False, dropped=dropped, type_meta=True)
    return dropped


# --------------------------------------------------------------------------- pruning
def _nullable(schema: Schema) -> bool:
    return schema.get("nullable") is True


def _child_schema(schema: Schema, key: str) -> tuple[Schema | None, bool]:
    """The schema of ``key`` inside an object node, and whether it is a map value (additionalProperties)."""
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key], False
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        return extra, True
    return None, False


def _is_integral_float(value: Any) -> bool:
    return isinstance(value, float) and value.is_integer()


def _prune(
    value: Any,
    schema: Schema | None,
    path: str,
    *,
    mutate: bool,
    dropped: list[str] | None,
    type_meta: bool = False,
) -> None:
    if isinstance(value, dict):
        if schema is None:
            # No schema below here: every key is unknown.
            for key in list(value):
                _drop(value, key, _field(path, key), mutate, dropped)
            return
        preserve = schema.get(PRESERVE) is True or schema.get("additionalProperties") is True
        keep_meta = type_meta or schema.get(EMBEDDED) is True
        for key in list(value):
            if keep_meta and key in _TYPE_META:
                continue
            child, is_map_value = _child_schema(schema, key)
            child_path = _map_key(path, key) if is_map_value else _field(path, key)
            if child is None:
                if not preserve:
                    _drop(value, key, child_path, mutate, dropped)
                continue
            item = value[key]
            if item is None and not _nullable(child) and "default" not in child:
                if mutate:
                    del value[key]
                continue
            if mutate and _is_integral_float(item) and (child.get("type") == "integer" or child.get(INT_OR_STRING)):
                value[key] = int(item)
            _prune(value[key], child, child_path, mutate=mutate, dropped=dropped)
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        item_schema = items if isinstance(items, Mapping) else None
        if item_schema is None and schema is not None and schema.get(PRESERVE) is True:
            return
        for i, item in enumerate(value):
            if mutate and item_schema is not None and _is_integral_float(item) and item_schema.get("type") == "integer":
                value[i] = int(item)
            _prune(value[i], item_schema, _index(path, i), mutate=mutate, dropped=dropped)


def _drop(container: dict[str, Any], key: str, path: str, mutate: bool, dropped: list[str] | None) -> None:
    if dropped is not None:
        dropped.append(path)
    if mutate:
        del container[key]


# --------------------------------------------------------------------------- defaulting
def _default(value: Any, schema: Schema | None, *, type_meta: bool = False) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        keep_meta = type_meta or schema.get(EMBEDDED) is True
        for key, prop in (schema.get("properties") or {}).items():
            if "default" not in prop or (keep_meta and key in _TYPE_META):
                continue
            if key not in value or (value[key] is None and not _nullable(prop)):
                value[key] = copy.deepcopy(prop["default"])
        for key, item in value.items():
            if keep_meta and key in _TYPE_META:
                continue
            child, _ = _child_schema(schema, key)
            _default(item, child)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _default(item, items)


# --------------------------------------------------------------------------- validation
def _json_type(value: Any) -> str:
    """The JSON type name Kubernetes reports for a value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int) or _is_integral_float(value):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == "number":
        return actual in ("integer", "number")
    return actual == expected


def _render(value: Any) -> str:
    """A value as Kubernetes prints it after ``Invalid value:``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _number(value: Any) -> str:
    """A schema bound printed like Go's ``%v``: 0 not 0.0."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == True`` in Python, not in JSON; ``1 == 1.0`` in both."""
    numeric = ("integer", "number")
    type_a, type_b = _json_type(a), _json_type(b)
    if type_a in numeric and type_b in numeric:
        return bool(a == b)
    return type_a == type_b and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _invalid_body(path: str, value: Any, message: str) -> FieldError:
    """kube-openapi's message (which repeats the path ``in body``) behind ``Invalid value: <value>:``."""
    return invalid(_shown(path), f"{_render(value)}: {_shown(path)} in body {message}")


def _type_error(path: str, value: Any, expected: str) -> FieldError:
    actual = _json_type(value)
    return invalid(_shown(path), f'"{actual}": {_shown(path)} in body must be of type {expected}: "{actual}"')


def _validate(value: Any, schema: Schema, path: str, errors: list[FieldError], *, type_meta: bool = False) -> None:
    if value is None and _nullable(schema):
        return
    expected = schema.get("type")
    if schema.get(INT_OR_STRING) is True:
        if _json_type(value) not in ("integer", "string"):
            errors.append(_type_error(path, value, "integer,string"))
            return
    elif isinstance(expected, str) and expected:
        if not _has_type(value, expected):
            errors.append(_type_error(path, value, expected))
            return
    elif value is None:
        # Untyped (preserve-unknown-fields) nodes accept anything, null included.
        return

    if "enum" in schema and not any(_same_json(value, allowed) for allowed in schema["enum"]):
        choices = [a if isinstance(a, str) else _render(a) for a in schema["enum"]]
        shown = value if isinstance(value, str) else _render(value)
        errors.append(not_supported(_shown(path), shown, choices))

    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors, type_meta=type_meta or schema.get(EMBEDDED) is True)


def _validate_string(value: str, schema: Schema, path: str, errors: list[FieldError]) -> None:
    max_length = schema.get("maxLength")
    if isinstance(max_length, int) and len(value) > max_length:
        errors.append(FieldError(_shown(path), f"may not be more than {max_length} bytes", "FieldValueTooLong"))
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(value) < min_length:
        errors.append(_invalid_body(path, value, f"should be at least {min_length} chars long"))
    pattern = _compiled(schema.get("pattern"))
    if pattern is not None and pattern.search(value) is None:
        errors.append(_invalid_body(path, value, f"should match '{pattern.pattern}'"))
    if schema.get("format") == "date-time" and not is_rfc3339(value):
        errors.append(invalid(_shown(path), f'"{value}": {_shown(path)} in body must be of type date-time: "{value}"'))


def _compiled(pattern: Any) -> re.Pattern[str] | None:
    """The schema's ``pattern``; an expression Python cannot compile is ignored (CRD creation rejects it)."""
    if not isinstance(pattern, str):
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


def is_rfc3339(value: str) -> bool:
    """Whether ``value`` is an RFC 3339 timestamp with a time zone (``2024-01-02T03:04:05Z``)."""
    match = _RFC3339.match(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        datetime(year, month, day, hour, minute, min(second, 59))
    except ValueError:
        return False
    offset = match.group(8)
    return offset in ("Z", "z") or (int(offset[1:3]) < 24 and int(offset[4:6]) < 60)


def _validate_number(value: float, schema: Schema, path: str, errors: list[FieldError]) -> None:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float):
        if schema.get("exclusiveMinimum") is True and value <= minimum:
            errors.append(_invalid_body(path, value, f"should be greater than {_number(minimum)}"))
        elif value < minimum:
            errors.append(_invalid_body(path, value, f"should be greater than or equal to {_number(minimum)}"))
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float):
        if schema.get("exclusiveMaximum") is True and value >= maximum:
            errors.append(_invalid_body(path, value, f"should be less than {_number(maximum)}"))
        elif value > maximum:
            errors.append(_invalid_body(path, value, f"should be less than or equal to {_number(maximum)}"))
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0:
        quotient = value / multiple
        if abs(quotient - round(quotient)) > 1e-9:
            errors.append(_invalid_body(path, value, f"should be a multiple of {_number(multiple)}"))


def _validate_array(value: list[Any], schema: Schema, path: str, errors: list[FieldError]) -> None:
    max_items = schema.get("maxItems")
    if isinstance(max_items, int) and len(value) > max_items:
        errors.append(invalid(_shown(path), f"{len(value)}: must have at most {max_items} items"))
    min_items = schema.get("minItems")
    if isinstance(min_items, int) and len(value) < min_items:
        errors.append(_invalid_body(path, value, f"should have at least {min_items} items"))
    if schema.get("uniqueItems") is True:
        seen: list[Any] = []
        for i, item in enumerate(value):
            if any(_same_json(item, s) for s in seen):
                errors.append(duplicate(_index(path, i), _render(item)))
            seen.append(item)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _validate(item, items, _index(path, i), errors)


def _validate_object(
    value: dict[str, Any], schema: Schema, path: str, errors: list[FieldError], *, type_meta: bool
) -> None:
    max_properties = schema.get("maxProperties")
    if isinstance(max_properties, int) and len(value) > max_properties:
        errors.append(invalid(_shown(path), f"{len(value)}: must have at most {max_properties} properties"))
    min_properties = schema.get("minProperties")
    if isinstance(min_properties, int) and len(value) < min_properties:
        errors.append(_invalid_body(path, value, f"should have at least {min_properties} properties"))
    for name in schema.get("required") or ():
        if name not in value:
            errors.append(required(_field(path, name)))
    for key, item in value.items():
        if type_meta and key in _TYPE_META:
            continue
        child, is_map_value = _child_schema(schema, key)
        if child is not None:
            _validate(item, child, _map_key(path, key) if is_map_value else _field(path, key), errors)


# --------------------------------------------------------------------------- CRDs
def validate_crd(crd: Mapping[str, Any]) -> list[FieldError]:
    """The checks kube-apiserver makes when a CustomResourceDefinition is created or updated (a useful subset)."""
    errors: list[FieldError] = []
    spec = crd.get("spec")
    if not isinstance(spec, Mapping):
        return [required("spec")]
    names = spec.get("names") if isinstance(spec.get("names"), Mapping) else {}
    assert isinstance(names, Mapping)
    group = spec.get("group")
    plural = names.get("plural")

    if not group:
        errors.append(required("spec.group"))
    elif not isinstance(group, str) or "." not in group:
        errors.append(invalid("spec.group", f"{_render(group)}: should be a domain with at least one dot"))

    if not plural:
        errors.append(required("spec.names.plural"))
    elif not isinstance(plural, str) or not _DNS_LABEL.match(plural):
        errors.append(invalid("spec.names.plural", f"{_render(plural)}: must be a lowercase RFC 1123 label"))
    if not names.get("kind"):
        errors.append(required("spec.names.kind"))
    singular = names.get("singular")
    if singular and (not isinstance(singular, str) or not _DNS_LABEL.match(singular)):
        errors.append(invalid("spec.names.singular", f"{_render(singular)}: must be a lowercase RFC 1123 label"))

    name = (crd.get("metadata") or {}).get("name")
    if group and plural and name != f"{plural}.{group}":
        errors.append(invalid("metadata.name", f'{_render(name)}: must be spec.names.plural+"."+spec.group'))

    scope = spec.get("scope")
    if not scope:
        errors.append(required("spec.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errors.append(not_supported("spec.scope", scope, ["Cluster", "Namespaced"]))

    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        errors.append(required("spec.versions", "must have at least one version"))
        return errors
    seen: set[str] = set()
    storage = 0
    for i, version in enumerate(versions):
        vpath = f"spec.versions[{i}]"
        if not isinstance(version, Mapping):
            errors.append(invalid(vpath, f"{_render(version)}: must be an object"))
            continue
        vname = version.get("name")
        if not vname:
            errors.append(required(f"{vpath}.name"))
        elif vname in seen:
            errors.append(duplicate(f"{vpath}.name", _render(vname)))
        else:
            seen.add(str(vname))
        if version.get("storage") is True:
            storage += 1
        errors.extend(_validate_version_schema(version, vpath))
    if storage != 1:
        errors.append(invalid("spec.versions", "must have exactly one version marked as storage version"))
    return errors


def _validate_version_schema(version: Mapping[str, Any], vpath: str) -> list[FieldError]:
    holder = version.get("schema")
    root = holder.get("openAPIV3Schema") if isinstance(holder, Mapping) else None
    path = f"{vpath}.schema.openAPIV3Schema"
    if not isinstance(root, Mapping) or not root:
        return [required(path, "schemas are required")]
    errors: list[FieldError] = []
    root_type = root.get("type")
    if not root_type:
        errors.append(required(f"{path}.type", "must not be empty at the root"))
    elif root_type != "object":
        errors.append(invalid(f"{path}.type", f"{_render(root_type)}: must be object at the root"))
    _structural(root, path, errors, at_root=True)
    return errors


def _structural(node: Mapping[str, Any], path: str, errors: list[FieldError], *, at_root: bool = False) -> None:
    """Structural-schema rules, with kube-apiserver's paths (``properties[spec].type``)."""
    if "$ref" in node:
        errors.append(forbidden(f"{path}.$ref", "$ref is not supported"))
    node_type = node.get("type")
    untyped_ok = node.get(PRESERVE) is True or node.get(INT_OR_STRING) is True
    if node_type is not None and node_type not in TYPES:
        errors.append(not_supported(f"{path}.type", node_type, TYPES))
    elif not node_type and not untyped_ok and not at_root:
        errors.append(required(f"{path}.type", "must not be empty for specified fields"))

    properties = node.get("properties")
    extra = node.get("additionalProperties")
    items = node.get("items")
    if (properties or isinstance(extra, Mapping)) and node_type not in (None, "object"):
        errors.append(invalid(f"{path}.type", f"{_render(node_type)}: must be object when properties are specified"))
    if properties and extra not in (None, False):
        errors.append(
            forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive")
        )
    if node_type == "array" and not isinstance(items, Mapping):
        errors.append(required(f"{path}.items", "must be specified"))
    if items is not None and node_type not in (None, "array"):
        errors.append(invalid(f"{path}.type", f"{_render(node_type)}: must be array when items are specified"))
    if isinstance(node.get("pattern"), str) and _compiled(node["pattern"]) is None:
        errors.append(invalid(f"{path}.pattern", f"{_render(node['pattern'])}: must be a valid regular expression"))
    if node.get("uniqueItems") is True:
        errors.append(
            forbidden(
                f"{path}.uniqueItems",
                "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
            )
        )
    if node.get(INT_OR_STRING) is True and node_type:
        errors.append(forbidden(f"{path}.type", "must be empty when x-kubernetes-int-or-string is true"))
    if "default" in node:
        default_errors: list[FieldError] = []
        _validate(copy.deepcopy(node["default"]), node, "", default_errors)
        errors.extend(_rebase(e, f"{path}.default") for e in default_errors)

    if isinstance(properties, Mapping):
        for key, sub in properties.items():
            if isinstance(sub, Mapping):
                _structural(sub, f"{path}.properties[{key}]", errors)
    if isinstance(extra, Mapping):
        _structural(extra, f"{path}.additionalProperties", errors)
    if isinstance(items, Mapping):
        _structural(items, f"{path}.items", errors)


def _rebase(error: FieldError, prefix: str) -> FieldError:
    """An error found inside a default value, moved under the default's schema path."""
    inner = "" if error.path == "<root>" else error.path
    path = prefix + ("" if not inner else inner if inner.startswith("[") else f".{inner}")
    reason = error.reason.replace("<root> in body", f"{prefix} in body")
    if inner:
        reason = reason.replace(f"{inner} in body", f"{path} in body")
    return FieldError(path, reason, error.type)
