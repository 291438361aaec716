"""The generated CRDs: structural schemas, no drift from deploy/crds/, KubeStash's names, and agreement with the models.

Kubernetes rejects a CRD whose schema is not structural, and silently prunes
fields a schema does not declare; both would only show up on a real cluster, so
they are checked here against the rules and against real KubeStash manifests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from compat_corpus import COMPAT_ROOT as COMPAT
from kubestash.api.crd import (
    INT_OR_STRING,
    PRESERVE,
    SchemaError,
    all_crds,
    crd_file_name,
    crd_for,
    openapi_schema,
    write_crds,
)
from kubestash.api.manifests import dump_yaml, parse_documents, read_documents
from kubestash.api.registry import KINDS, KindInfo, kind_info, lookup_kind
from kubestash.cli.main import main

REPO = Path(__file__).resolve().parents[2]
DEPLOY_CRDS = REPO / "deploy" / "crds"
REGENERATE = "run `kubestash crds --output-dir deploy/crds` and commit the result"

SCALAR_TYPES = {"string", "integer", "number", "boolean"}


def _info(kind: str) -> KindInfo:
    return next(k for k in KINDS if k.kind == kind)


def _schema(kind: str) -> dict[str, Any]:
    crd = crd_for(_info(kind))
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node reachable through properties, items and additionalProperties."""
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}{{*}}")


def _all_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield key
            yield from _all_keys(sub)
    elif isinstance(value, list):
        for item in value:
            yield from _all_keys(item)


# ----------------------------------------------------------------- structural


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(info: KindInfo) -> None:
    schema = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    keys = set(_all_keys(schema))
    assert not keys & {"$ref", "$defs", "definitions", "anyOf", "oneOf", "allOf", "not", "title", "const"}

    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["properties"]["apiVersion"]["type"] == "string"
    assert schema["properties"]["kind"]["type"] == "string"
    assert "spec" in schema["required"]

    for path, node in _nodes(schema):
        where = f"{info.kind}{path}"
        if node.get(INT_OR_STRING):
            assert "type" not in node, where
        elif not node.get(PRESERVE):
            assert node.get("type") in {*SCALAR_TYPES, "object", "array"}, where
        if "properties" in node or "additionalProperties" in node:
            assert node["type"] == "object", where
        assert not ("properties" in node and "additionalProperties" in node), f"{where}: mutually exclusive"
        assert node.get("additionalProperties") is not False, where
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{where}: arrays need items"
        if "default" in node:
            assert node["default"] not in (None, ""), where
            if "enum" in node:
                assert node["default"] in node["enum"], where
        for name in node.get("required", []):
            assert name in node.get("properties", {}), f"{where}: required {name} undeclared"


def test_model_features_become_structural_equivalents() -> None:
    hook = _schema("HookTemplate")["properties"]["spec"]["properties"]["action"]["properties"]
    assert hook["httpGet"]["properties"]["port"] == {INT_OR_STRING: True}
    assert hook["httpGet"]["required"] == ["port"]

    storage = _schema("BackupStorage")["properties"]["spec"]["properties"]
    local = storage["storage"]["properties"]["local"]  # K8sModel: typed fields, plus any volume source
    assert local["type"] == "object" and local[PRESERVE] is True and "mountPath" in local["properties"]
    assert storage["runtimeSettings"] == {"type": "object", PRESERVE: True}
    assert storage["deletionPolicy"]["default"] == "Delete"
    assert storage["deletionPolicy"]["enum"] == ["Delete", "WipeOut"]
    selector = storage["usagePolicy"]["properties"]["allowedNamespaces"]["properties"]["selector"]
    assert selector["properties"]["matchLabels"] == {"type": "object", "additionalProperties": {"type": "string"}}

    components = _schema("Snapshot")["properties"]["status"]["properties"]["components"]
    assert components["type"] == "object"
    assert components["additionalProperties"]["properties"]["driver"]["type"] == "string"

    # Single-value Literal (JSON Schema `const`) becomes a one-item enum.
    template = _schema("BackupBlueprint")["properties"]["spec"]["properties"]["backupConfigurationTemplate"]
    assert template["properties"]["deletionPolicy"] == {"enum": ["OnDelete"], "type": "string"}

    # `name: str = ""` means "unset", not a value Kubernetes should write into every object.
    backend = _schema("BackupConfiguration")["properties"]["spec"]["properties"]["backends"]["items"]
    assert "default" not in backend["properties"]["name"]
    session = _schema("BackupConfiguration")["properties"]["spec"]["properties"]["sessions"]["items"]
    assert session["properties"]["sessionHistoryLimit"] == {
        "default": 1,
        "description": "How many finished BackupSessions to keep.",
        "minimum": 0,
        "type": "integer",
    }


def test_unsupported_model_is_refused() -> None:
    class Node(BaseModel):
        children: list[Node] | None = None

    with pytest.raises(SchemaError, match="recursive"):
        openapi_schema(Node)

    class Mixed(BaseModel):
        value: int | bool

    with pytest.raises(SchemaError, match="not structural"):
        openapi_schema(Mixed)


# ---------------------------------------------------------------------- drift


@pytest.mark.parametrize("info", KINDS, ids=lambda k: k.kind)
def test_deploy_crds_are_up_to_date(info: KindInfo) -> None:
    path = DEPLOY_CRDS / crd_file_name(info)
    assert path.is_file(), f"{path} is missing: {REGENERATE}"
    assert path.read_text(encoding="utf-8") == dump_yaml([crd_for(info)]), f"{path} is out of date: {REGENERATE}"


def test_deploy_crds_has_no_extra_files() -> None:
    expected = {crd_file_name(info) for info in KINDS}
    extra = sorted(p.name for p in DEPLOY_CRDS.iterdir() if p.name not in expected)
    assert not extra, f"{extra} in deploy/crds/ belong to no kind: delete them, then {REGENERATE}"


def test_output_is_deterministic() -> None:
    assert dump_yaml(all_crds()) == dump_yaml(all_crds())


def test_write_crds_replaces_stale_files_only(tmp_path: Path) -> None:
    (tmp_path / "core.kubestash.com_oldkinds.yaml").write_text("stale\n")
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")
    written = write_crds(tmp_path)
    assert [p.name for p in written] == [crd_file_name(info) for info in KINDS]
    assert not (tmp_path / "core.kubestash.com_oldkinds.yaml").exists()
    assert (tmp_path / "kustomization.yaml").exists()


def test_cli_prints_all_crds() -> None:
    result = CliRunner().invoke(main, ["crds"])
    assert result.exit_code == 0, result.output
    assert result.output == dump_yaml(all_crds())
    names = [doc.data["metadata"]["name"] for doc in parse_documents(result.output, "<stdout>")]
    assert names == [info.crd_name for info in KINDS]


def test_cli_writes_files(tmp_path: Path) -> None:
    out = tmp_path / "crds"
    result = CliRunner().invoke(main, ["crds", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [str(out / crd_file_name(info)) for info in KINDS]
    for info in KINDS:
        assert (out / crd_file_name(info)).read_text(encoding="utf-8") == dump_yaml([crd_for(info)])


# ---------------------------------------------------------------------- names


def test_crd_names_and_scope() -> None:
    crds = {crd["spec"]["names"]["kind"]: crd for crd in all_crds()}
    assert list(crds) == [info.kind for info in KINDS]

    repo = crds["Repository"]
    assert repo["metadata"]["name"] == "repositories.storage.kubestash.com"
    assert repo["spec"]["group"] == "storage.kubestash.com"
    assert repo["spec"]["scope"] == "Namespaced"
    assert repo["spec"]["names"] == {
        "kind": "Repository",
        "listKind": "RepositoryList",
        "plural": "repositories",
        "singular": "repository",
        "shortNames": ["repo"],
        "categories": ["kubestash", "appscode", "all"],
    }
    version = repo["spec"]["versions"][0]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"][1] == {
        "name": "Snapshot-Count",
        "type": "integer",
        "jsonPath": ".status.snapshotCount",
    }

    function = crds["Function"]
    assert function["spec"]["scope"] == "Cluster"
    assert function["spec"]["names"]["shortNames"] == ["fn"]
    assert "subresources" not in function["spec"]["versions"][0]

    bvs = crds["BackupVerificationSession"]["spec"]["names"]
    assert bvs["plural"] == bvs["singular"] == "backupverificationsession"
    assert crds["BackupVerificationSession"]["metadata"]["name"] == "backupverificationsession.core.kubestash.com"

    assert crds["RetentionPolicy"]["spec"]["names"]["categories"] == ["kubestash", "appscode"]
    assert "shortNames" not in crds["RetentionPolicy"]["spec"]["names"]
    assert crd_file_name(kind_info(_info("BackupStorage").model)) == "storage.kubestash.com_backupstorages.yaml"


# ------------------------------------------------- schema accepts what the model accepts


def _schema_errors(value: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    """What an API server would reject or prune; nulls are pruned silently, as Kubernetes does."""
    if value is None:
        return
    if schema.get(INT_OR_STRING):
        if isinstance(value, bool) or not isinstance(value, int | str):
            yield f"{path}: {value!r} is not an int or string"
        return
    kind = schema.get("type")
    python_types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
    }
    if kind is not None and (
        not isinstance(value, python_types[kind]) or (kind in ("integer", "number") and isinstance(value, bool))
    ):
        yield f"{path}: {value!r} is not {kind}"
        return
    if "enum" in schema and value not in schema["enum"]:
        yield f"{path}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and value < schema["minimum"]:
        yield f"{path}: {value!r} below {schema['minimum']}"
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from _schema_errors(item, schema["items"], f"{path}[{i}]")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                yield f"{path}.{name}: required"
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                yield from _schema_errors(item, properties[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from _schema_errors(item, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get(PRESERVE):
                yield f"{path}.{key}: unknown field, would be pruned"


def _compat_documents() -> list[tuple[str, KindInfo, dict[str, Any]]]:
    found = []
    for file in sorted(COMPAT.rglob("*.yaml")):
        for doc in read_documents(str(file)):
            data = doc.data
            if not isinstance(data, dict):
                continue
            info = lookup_kind(str(data.get("apiVersion")), str(data.get("kind")))
            if info is not None:
                found.append((f"{file.relative_to(COMPAT)}:{doc.index}", info, data))
    return found


def test_schema_accepts_what_the_model_accepts() -> None:
    samples = _compat_documents()
    assert len({info.kind for _, info, _ in samples}) >= 10, "expected samples of most kinds"
    errors: list[str] = []
    for where, info, data in samples:
        try:
            info.decode(data)
        except ValueError:
            continue  # the model refuses it; the schema may too
        schema = crd_for(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in data.items() if k != "metadata"}  # the API server validates metadata itself
        errors += [f"{where}: {e}" for e in _schema_errors(body, schema, "")]
    assert not errors, "\n".join(errors)
