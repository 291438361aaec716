"""The bundled API server treats custom resources like kube-apiserver: prune, default, validate; and checks CRDs.

Most cases use the real generated KubeStash CRD schemas and the KubeStash docs'
manifests, so what is asserted is what a user of ``kubectl apply`` would see.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from compat_corpus import COMPAT_ROOT
from kubestash.api.crd import all_crds
from kubestash.apiserver.resources import from_crd
from kubestash.apiserver.schema import admit_custom, unknown_fields, validate_crd

SCHEMAS: dict[str, dict[str, Any]] = {
    rt.kind: dict(rt.schema) for crd in all_crds() for rt in from_crd(crd) if rt.schema is not None
}
API_VERSIONS = {rt.kind: rt.api_version for crd in all_crds() for rt in from_crd(crd)}
PRESERVE_KEY = "x-kubernetes-preserve-unknown-fields"
BACKUP_STORAGE_DOC = COMPAT_ROOT / "kubestash-docs" / "concepts" / "backupstorage.yaml"


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _messages(errors: list[Any]) -> list[str]:
    return [e.message for e in errors]


def _storage(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "storage.kubestash.com/v1alpha1",
        "kind": "BackupStorage",
        "metadata": {"name": "s", "namespace": "demo"},
        "spec": {"storage": {"provider": "gcs", "gcs": {"bucket": "b"}}, **spec},
    }


def _compat_objects() -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(COMPAT_ROOT.rglob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError:
            continue
        for i, doc in enumerate(docs):
            if isinstance(doc, dict) and API_VERSIONS.get(str(doc.get("kind"))) == doc.get("apiVersion"):
                out.append((f"{path.relative_to(COMPAT_ROOT)}#{i}", doc))
    return out


COMPAT_OBJECTS = _compat_objects()


# --------------------------------------------------------------------------- real manifests
def test_the_compat_corpus_holds_every_kind() -> None:
    assert len(COMPAT_OBJECTS) > 50
    assert {str(doc["kind"]) for _, doc in COMPAT_OBJECTS} >= {"BackupStorage", "BackupConfiguration", "RestoreSession"}


@pytest.mark.parametrize(("where", "doc"), COMPAT_OBJECTS, ids=[w for w, _ in COMPAT_OBJECTS])
def test_kubestash_docs_manifests_are_admitted_unchanged_but_for_defaults(where: str, doc: dict[str, Any]) -> None:
    schema = SCHEMAS[doc["kind"]]
    obj = copy.deepcopy(doc)

    assert unknown_fields(obj, schema) == []
    assert _messages(admit_custom(obj, schema)) == []
    # Defaulting only adds; nothing the user wrote is dropped or changed.
    _assert_contains(obj, doc, where)


def _assert_contains(admitted: Any, original: Any, where: str) -> None:
    if isinstance(original, dict):
        assert isinstance(admitted, dict), where
        for key, value in original.items():
            if value is not None:
                assert key in admitted, f"{where}: {key} dropped"
                _assert_contains(admitted[key], value, f"{where}.{key}")
    elif isinstance(original, list):
        assert isinstance(admitted, list) and len(admitted) == len(original), where
        for i, (got, wrote) in enumerate(zip(admitted, original, strict=True)):
            _assert_contains(got, wrote, f"{where}[{i}]")
    else:
        assert admitted == original, where


def test_backup_storage_from_the_docs_gets_deletion_policy_defaulted() -> None:
    obj = _load(BACKUP_STORAGE_DOC)
    del obj["spec"]["deletionPolicy"]
    obj["spec"]["usagePolicy"] = {"allowedNamespaces": {}}

    assert admit_custom(obj, SCHEMAS["BackupStorage"]) == []

    assert obj["spec"]["deletionPolicy"] == "Delete"
    assert obj["spec"]["usagePolicy"] == {"allowedNamespaces": {"from": "Same"}}
    assert obj["spec"]["storage"]["gcs"]["bucket"] == "kubestash-demo"
    assert obj["status"]["repositories"][0]["size"] == "12.222 MiB"


def test_defaults_apply_only_inside_objects_that_exist() -> None:
    obj = _storage()
    assert admit_custom(obj, SCHEMAS["BackupStorage"]) == []
    assert obj["spec"]["deletionPolicy"] == "Delete"
    assert "usagePolicy" not in obj["spec"]
    assert "status" not in obj


# --------------------------------------------------------------------------- pruning
def test_unknown_fields_are_reported_and_pruned_keeping_preserved_ones() -> None:
    obj = _storage(bogus=1, runtimeSettings={"pod": {"anything": ["goes"]}})
    obj["spec"]["storage"]["gcs"]["extra"] = "x"
    obj["status"] = {"repositories": [{"name": "r", "junk": True}], "phase": "Ready"}
    obj["topLevel"] = {"a": 1}
    obj["metadata"]["whatever"] = "kept: metadata is the server's business"
    schema = SCHEMAS["BackupStorage"]

    before = copy.deepcopy(obj)
    unknown = unknown_fields(obj, schema)
    assert obj == before, "unknown_fields must not change the object"
    assert sorted(unknown) == [
        "spec.bogus",
        "spec.storage.gcs.extra",
        "status.repositories[0].junk",
        "topLevel",
    ]

    assert admit_custom(obj, schema) == []
    assert "bogus" not in obj["spec"]
    assert obj["spec"]["storage"]["gcs"] == {"bucket": "b"}
    assert obj["status"]["repositories"] == [{"name": "r"}]
    assert "topLevel" not in obj
    assert obj["spec"]["runtimeSettings"] == {"pod": {"anything": ["goes"]}}
    assert obj["metadata"]["whatever"].startswith("kept")
    assert (obj["apiVersion"], obj["kind"]) == ("storage.kubestash.com/v1alpha1", "BackupStorage")


def test_map_values_are_checked_with_their_key_in_the_path() -> None:
    obj = _storage(usagePolicy={"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": 7}}}})
    errors = admit_custom(obj, SCHEMAS["BackupStorage"])
    path = "spec.usagePolicy.allowedNamespaces.selector.matchLabels[team]"
    assert _messages(errors) == [f'{path}: Invalid value: "integer": {path} in body must be of type string: "integer"']


# --------------------------------------------------------------------------- validation
def test_wrong_type_is_rejected_with_the_field_path() -> None:
    errors = admit_custom(_storage(default="yes"), SCHEMAS["BackupStorage"])
    assert _messages(errors) == [
        'spec.default: Invalid value: "string": spec.default in body must be of type boolean: "string"'
    ]
    assert errors[0].type == "FieldValueInvalid"


def test_enum_required_minimum_and_date_time() -> None:
    obj = _storage(deletionPolicy="Keep")
    obj["spec"]["storage"] = {"provider": "gcs", "gcs": {"bucket": "b", "maxConnections": -1}}
    obj["status"] = {
        "conditions": [{"type": "Ready", "status": "Maybe", "lastTransitionTime": "yesterday"}, {"type": "X"}],
    }
    errors = admit_custom(obj, SCHEMAS["BackupStorage"])
    assert sorted(_messages(errors)) == sorted(
        [
            'spec.deletionPolicy: Unsupported value: "Keep": supported values: "Delete", "WipeOut"',
            "spec.storage.gcs.maxConnections: Invalid value: -1: spec.storage.gcs.maxConnections in body "
            "should be greater than or equal to 0",
            'status.conditions[0].status: Unsupported value: "Maybe": supported values: "False", "True", "Unknown"',
            'status.conditions[0].lastTransitionTime: Invalid value: "yesterday": '
            'status.conditions[0].lastTransitionTime in body must be of type date-time: "yesterday"',
            "status.conditions[1].status: Required value",
            "status.conditions[1].lastTransitionTime: Required value",
        ]
    )


def test_missing_required_object_is_reported() -> None:
    obj = _storage()
    del obj["spec"]["storage"]
    assert _messages(admit_custom(obj, SCHEMAS["BackupStorage"])) == ["spec.storage: Required value"]
    assert _messages(admit_custom({"apiVersion": "x", "kind": "BackupStorage"}, SCHEMAS["BackupStorage"])) == [
        "spec: Required value"
    ]


def test_int_or_string_port_of_a_hook() -> None:
    schema = SCHEMAS["HookTemplate"]

    def hook(port: Any) -> dict[str, Any]:
        return {
            "apiVersion": "core.kubestash.com/v1alpha1",
            "kind": "HookTemplate",
            "metadata": {"name": "h"},
            "spec": {"action": {"tcpSocket": {"port": port}}, "executor": {"type": "Operator"}},
        }

    assert admit_custom(hook(8080), schema) == []
    assert admit_custom(hook("http"), schema) == []
    path = "spec.action.tcpSocket.port"
    assert _messages(admit_custom(hook(True), schema)) == [
        f'{path}: Invalid value: "boolean": {path} in body must be of type integer,string: "boolean"'
    ]


# --------------------------------------------------------------------------- nulls
NULLS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "plain": {"type": "string"},
                "withDefault": {"type": "string", "default": "d"},
                "nullable": {"type": "string", "nullable": True, "default": "not used"},
                "list": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["plain"],
        }
    },
}


def test_null_of_a_non_nullable_field_is_dropped_then_defaulted() -> None:
    obj: dict[str, Any] = {"spec": {"plain": None, "withDefault": None, "nullable": None, "list": ["a", None]}}
    errors = admit_custom(obj, NULLS)
    assert obj["spec"] == {"withDefault": "d", "nullable": None, "list": ["a", None]}
    assert sorted(_messages(errors)) == [
        'spec.list[1]: Invalid value: "null": spec.list[1] in body must be of type string: "null"',
        "spec.plain: Required value",
    ]
    assert unknown_fields({"spec": {"plain": None}}, NULLS) == []


# --------------------------------------------------------------------------- synthetic schemas
NESTED_DEFAULTS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "retry": {
                    "type": "object",
                    "default": {},
                    "properties": {
                        "limit": {"type": "integer", "default": 3},
                        "backoff": {"type": "object", "properties": {"seconds": {"type": "integer", "default": 10}}},
                    },
                },
                "items": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"mode": {"type": "string", "default": "fast"}}},
                },
            },
        }
    },
}


def test_a_defaulted_object_is_itself_defaulted_but_absent_parents_are_not_created() -> None:
    obj: dict[str, Any] = {"spec": {"items": [{}, {"mode": "slow"}]}}
    assert admit_custom(obj, NESTED_DEFAULTS) == []
    assert obj == {"spec": {"retry": {"limit": 3}, "items": [{"mode": "fast"}, {"mode": "slow"}]}}

    no_spec: dict[str, Any] = {}
    assert admit_custom(no_spec, NESTED_DEFAULTS) == []
    assert no_spec == {}


def test_defaults_are_deep_copies() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "default": {"x": []}, PRESERVE_KEY: True}}}
    first: dict[str, Any] = {}
    second: dict[str, Any] = {}
    admit_custom(first, schema)
    admit_custom(second, schema)
    first["a"]["x"].append(1)
    assert second["a"] == {"x": []}
    assert schema["properties"]["a"]["default"] == {"x": []}


BOUNDS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 10},
        "ratio": {"type": "number", "maximum": 1, "exclusiveMaximum": True},
        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
        "when": {"type": "string", "format": "date-time"},
    },
}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "a", 'name: Invalid value: "a": name in body should be at least 2 chars long'),
        ("name", "abcdef", "name: Too long: may not be more than 5 bytes"),
        ("name", "ab1", "name: Invalid value: \"ab1\": name in body should match '^[a-z]+$'"),
        ("count", 0, "count: Invalid value: 0: count in body should be greater than 0"),
        ("count", 11, "count: Invalid value: 11: count in body should be less than or equal to 10"),
        ("count", 1.5, 'count: Invalid value: "number": count in body must be of type integer: "number"'),
        ("count", True, 'count: Invalid value: "boolean": count in body must be of type integer: "boolean"'),
        ("ratio", 1, "ratio: Invalid value: 1: ratio in body should be less than 1"),
        ("ratio", "0.5", 'ratio: Invalid value: "string": ratio in body must be of type number: "string"'),
        ("tags", [], "tags: Invalid value: []: tags in body should have at least 1 items"),
        ("tags", ["a", "b", "c"], "tags: Invalid value: 3: must have at most 2 items"),
        ("tags", "a", 'tags: Invalid value: "string": tags in body must be of type array: "string"'),
        (
            "when",
            "2024-02-30T00:00:00Z",
            'when: Invalid value: "2024-02-30T00:00:00Z": when in body must be of type '
            'date-time: "2024-02-30T00:00:00Z"',
        ),
        (
            "when",
            "2024-02-03T04:05:06",
            'when: Invalid value: "2024-02-03T04:05:06": when in body must be of type date-time: "2024-02-03T04:05:06"',
        ),
    ],
)
def test_bounds_lengths_patterns_and_formats(field: str, value: Any, message: str) -> None:
    assert _messages(admit_custom({field: value}, BOUNDS)) == [message]


@pytest.mark.parametrize(
    "good",
    [
        {"name": "abc", "count": 10, "ratio": 0.5, "tags": ["a", "b"], "when": "2024-02-03T04:05:06Z"},
        {"count": 2.0, "ratio": 0, "when": "2024-02-03T04:05:06.123+05:30"},
    ],
)
def test_values_within_bounds_are_accepted(good: dict[str, Any]) -> None:
    assert admit_custom(good, BOUNDS) == []


def test_an_integral_float_for_an_integer_is_stored_as_an_integer() -> None:
    obj: dict[str, Any] = {"count": 2.0}
    assert admit_custom(obj, BOUNDS) == []
    assert obj["count"] == 2 and isinstance(obj["count"], int)


def test_embedded_resources_keep_their_type_meta() -> None:
    schema = {
        "type": "object",
        "properties": {
            "template": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "properties": {"spec": {"type": "object", "properties": {"a": {"type": "string"}}}},
            }
        },
    }
    obj = {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": "1", "b": 2}}}
    assert unknown_fields(obj, schema) == ["template.spec.b"]
    assert admit_custom(obj, schema) == []
    assert obj == {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"a": "1"}}}


def test_an_object_where_the_schema_has_a_scalar_loses_its_keys_and_is_rejected() -> None:
    obj = _storage(default={"a": 1})
    assert unknown_fields(obj, SCHEMAS["BackupStorage"]) == ["spec.default.a"]
    assert _messages(admit_custom(obj, SCHEMAS["BackupStorage"])) == [
        'spec.default: Invalid value: "object": spec.default in body must be of type boolean: "object"'
    ]


# --------------------------------------------------------------------------- CRDs
def test_every_generated_crd_is_valid() -> None:
    for crd in all_crds():
        assert validate_crd(crd) == [], crd["metadata"]["name"]


def _crd() -> dict[str, Any]:
    return copy.deepcopy(next(c for c in all_crds() if c["spec"]["names"]["kind"] == "BackupStorage"))


def test_crd_name_must_be_plural_dot_group() -> None:
    crd = _crd()
    crd["metadata"]["name"] = "storages.storage.kubestash.com"
    assert _messages(validate_crd(crd)) == [
        'metadata.name: Invalid value: "storages.storage.kubestash.com": must be spec.names.plural+"."+spec.group'
    ]


def test_crd_names_group_and_scope() -> None:
    crd = _crd()
    crd["spec"]["group"] = ""
    crd["spec"]["names"] = {"singular": "x"}
    crd["spec"]["scope"] = "Global"
    assert _messages(validate_crd(crd)) == [
        "spec.group: Required value",
        "spec.names.plural: Required value",
        "spec.names.kind: Required value",
        'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"',
    ]


def test_crd_versions_storage_and_schema() -> None:
    crd = _crd()
    version = crd["spec"]["versions"][0]
    second = copy.deepcopy(version)
    del second["schema"]
    crd["spec"]["versions"].append(second)
    assert _messages(validate_crd(crd)) == [
        'spec.versions[1].name: Duplicate value: "v1alpha1"',
        "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
        "spec.versions: Invalid value: must have exactly one version marked as storage version",
    ]

    crd = _crd()
    crd["spec"]["versions"] = []
    assert _messages(validate_crd(crd)) == ["spec.versions: Required value: must have at least one version"]


PREFIX = "spec.versions[0].schema.openAPIV3Schema"


def test_crd_schema_root_must_be_an_object() -> None:
    crd = _crd()
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["type"] = "array"
    assert _messages(validate_crd(crd)) == [
        f'{PREFIX}.type: Invalid value: "array": must be object at the root',
        f'{PREFIX}.type: Invalid value: "array": must be object when properties are specified',
        f"{PREFIX}.items: Required value: must be specified",
    ]


def test_crd_schema_must_be_structural_with_valid_defaults() -> None:
    crd = _crd()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    del spec["storage"]["type"]
    spec["ref"] = {"$ref": "#/definitions/Other"}
    spec["deletionPolicy"]["default"] = "Keep"
    spec["tags"] = {"type": "array", "uniqueItems": True, "items": {"type": "string", "pattern": "(unclosed"}}
    assert _messages(validate_crd(crd)) == [
        f'{PREFIX}.properties[spec].properties[deletionPolicy].default: Unsupported value: "Keep": '
        'supported values: "Delete", "WipeOut"',
        f"{PREFIX}.properties[spec].properties[storage].type: Required value: must not be empty for specified fields",
        f"{PREFIX}.properties[spec].properties[ref].$ref: Forbidden: $ref is not supported",
        f"{PREFIX}.properties[spec].properties[ref].type: Required value: must not be empty for specified fields",
        f"{PREFIX}.properties[spec].properties[tags].uniqueItems: Forbidden: uniqueItems cannot be set to true "
        "since the runtime complexity becomes quadratic",
        f'{PREFIX}.properties[spec].properties[tags].items.pattern: Invalid value: "(unclosed": '
        "must be a valid regular expression",
    ]
