"""The Tables ``kubectl get`` prints: columns, typed cells, ages, attached objects, watch events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubestash.api.crd import all_crds
from kubestash.apiserver.resources import BUILTINS, ResourceType, from_crd
from kubestash.apiserver.tables import evaluate, human_duration, table_event, to_table

NOW = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CUSTOM = {rt.kind: rt for crd in all_crds() for rt in from_crd(crd)}
BUILTIN = {(rt.group, rt.kind): rt for rt in BUILTINS}


def _ago(**delta: float) -> str:
    return (NOW - timedelta(**delta)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "demo", "uid": f"uid-{name}", "creationTimestamp": _ago(minutes=5), **extra}


def _names(table: dict[str, Any]) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"]]


def _cells(table: dict[str, Any]) -> list[list[Any]]:
    return [row["cells"] for row in table["rows"]]


# --------------------------------------------------------------------------- ages
@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60 + 59, "3h5m"),
        (8 * 3600, "8h"),
        (47 * 3600 + 59 * 60, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (731 * 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration_follows_kubernetes(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


# --------------------------------------------------------------------------- custom kinds
def test_backup_storage_table_has_the_crd_columns_with_typed_cells() -> None:
    rt = CUSTOM["BackupStorage"]
    ready = {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        "metadata": _meta("gcs", labels={"app": "x"}, creationTimestamp=_ago(minutes=5, seconds=3)),
        "spec": {"storage": {"provider": "gcs"}, "default": True, "deletionPolicy": "WipeOut"},
        "status": {"phase": "Ready", "totalSize": "1 GiB"},
    }
    fresh = {
        "apiVersion": rt.api_version,
        "kind": rt.kind,
        "metadata": _meta("s3", creationTimestamp=_ago(days=3, hours=2)),
        "spec": {"storage": {"provider": "s3"}},
    }

    table = to_table(rt, [ready, fresh], resource_version="42", continue_token="next", now=NOW)

    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "42", "continue": "next"}
    assert _names(table) == ["Name", "Provider", "Default", "Deletion-Policy", "Total-Size", "Phase", "Age"]
    name, provider, default, *_, age = table["columnDefinitions"]
    assert name["format"] == "name"
    assert name["type"] == "string"
    assert provider == {
        "name": "Provider",
        "type": "string",
        "format": "",
        "description": "Custom resource definition column (in JSONPath format): .spec.storage.provider",
        "priority": 0,
    }
    assert (default["type"], age["type"]) == ("boolean", "date")
    assert _cells(table) == [
        ["gcs", "gcs", True, "WipeOut", "1 GiB", "Ready", "5m3s"],
        ["s3", "s3", None, None, None, None, "3d2h"],
    ]
    assert table["rows"][0]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": ready["metadata"],
    }


def test_include_object_modes() -> None:
    rt = CUSTOM["Snapshot"]
    obj = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": _meta("snap"), "spec": {"repository": "r"}}
    assert to_table(rt, [obj], include_object="Object", now=NOW)["rows"][0]["object"] == obj
    assert "object" not in to_table(rt, [obj], include_object="None", now=NOW)["rows"][0]
    assert to_table(rt, [obj], now=NOW)["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_integer_and_date_cells_of_a_repository() -> None:
    rt = CUSTOM["Repository"]
    assert _names(to_table(rt, [], now=NOW)) == [
        "Name",
        "Integrity",
        "Snapshot-Count",
        "Size",
        "Phase",
        "Last-Successful-Backup",
        "Age",
    ]

    def row(status: dict[str, Any]) -> list[Any]:
        obj = {"metadata": _meta("repo"), "status": status}
        return list(to_table(rt, [obj], now=NOW)["rows"][0]["cells"])

    assert row(
        {"integrity": True, "snapshotCount": 4, "size": "3 MiB", "lastBackupTime": _ago(hours=3, minutes=5)}
    ) == [
        "repo",
        True,
        4,
        "3 MiB",
        None,
        "3h5m",
        "5m",
    ]
    # Wrong types give empty cells (kube-apiserver does the same); a malformed date says so.
    assert row({"integrity": "yes", "snapshotCount": "four", "lastBackupTime": "last week"}) == [
        "repo",
        None,
        None,
        None,
        None,
        "<invalid>",
        "5m",
    ]
    assert row({"snapshotCount": 4.0})[2] == 4


def test_custom_kind_without_printer_columns_shows_name_and_age() -> None:
    rt = ResourceType("example.com", "v1", "Widget", "widgets", "widget", schema={"type": "object"})
    table = to_table(rt, [{"metadata": _meta("w")}], now=NOW)
    assert _names(table) == ["Name", "Age"]
    assert _cells(table) == [["w", "5m"]]


# --------------------------------------------------------------------------- built-in kinds
def test_builtin_kinds_without_special_columns_show_name_and_age() -> None:
    table = to_table(BUILTIN[("", "ServiceAccount")], [{"metadata": _meta("default")}], now=NOW)
    assert _names(table) == ["Name", "Age"]
    assert _cells(table) == [["default", "5m"]]


def test_pod_columns() -> None:
    rt = BUILTIN[("", "Pod")]
    running = {
        "metadata": _meta("web"),
        "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "node-1"},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.7",
            "containerStatuses": [{"ready": True, "restartCount": 2}, {"ready": False, "restartCount": 1}],
        },
    }
    crashing = {
        "metadata": _meta("bad"),
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Running", "containerStatuses": [{"state": {"waiting": {"reason": "CrashLoopBackOff"}}}]},
    }
    leaving = {"metadata": _meta("old", deletionTimestamp=_ago(seconds=1)), "status": {"phase": "Running"}}

    table = to_table(rt, [running, crashing, leaving], now=NOW)

    assert _names(table) == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node"]
    assert [c["priority"] for c in table["columnDefinitions"]] == [0, 0, 0, 0, 0, 1, 1]
    assert _cells(table) == [
        ["web", "1/2", "Running", 3, "5m", "10.0.0.7", "node-1"],
        ["bad", "0/1", "CrashLoopBackOff", 0, "5m", None, None],
        ["old", "0/0", "Terminating", 0, "5m", None, None],
    ]


def test_namespace_and_pvc_columns() -> None:
    namespaces = to_table(BUILTIN[("", "Namespace")], [{"metadata": _meta("demo"), "status": {"phase": "Active"}}])
    assert _names(namespaces) == ["Name", "Status", "Age"]
    assert _cells(namespaces)[0][:2] == ["demo", "Active"]

    claim = {
        "metadata": _meta("data"),
        "spec": {"volumeName": "pv-1", "storageClassName": "standard"},
        "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]},
    }
    pvcs = to_table(BUILTIN[("", "PersistentVolumeClaim")], [claim], now=NOW)
    assert _names(pvcs)[:7] == ["Name", "Status", "Volume", "Capacity", "Access Modes", "StorageClass", "Age"]
    assert _cells(pvcs)[0][:7] == ["data", "Bound", "pv-1", "1Gi", "RWO", "standard", "5m"]


def test_job_completions_and_crd_created_at() -> None:
    job = {
        "metadata": _meta("backup"),
        "spec": {"completions": 1},
        "status": {
            "succeeded": 1,
            "startTime": _ago(minutes=4),
            "completionTime": _ago(minutes=3, seconds=30),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    jobs = to_table(BUILTIN[("batch", "Job")], [job], now=NOW)
    assert _names(jobs) == ["Name", "Status", "Completions", "Duration", "Age"]
    assert _cells(jobs) == [["backup", "Complete", "1/1", "30s", "5m"]]

    crd = {"metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-01-02T03:04:05Z"}}
    crds = to_table(BUILTIN[("apiextensions.k8s.io", "CustomResourceDefinition")], [crd], now=NOW)
    # Like kube-apiserver: CRDs show the creation time itself, not an age.
    assert _cells(crds) == [["widgets.example.com", "2024-01-02T03:04:05Z"]]


# --------------------------------------------------------------------------- watch
def test_table_event_wraps_one_object_and_may_omit_column_definitions() -> None:
    rt = CUSTOM["BackupStorage"]
    obj = {"metadata": _meta("gcs", resourceVersion="17"), "spec": {"storage": {"provider": "gcs"}}}

    first = table_event(rt, obj, now=NOW)
    later = table_event(rt, obj, with_columns=False, now=NOW)

    assert first["metadata"] == {"resourceVersion": "17"}
    assert len(first["columnDefinitions"]) == 7
    assert later["columnDefinitions"] == []
    assert _cells(first) == _cells(later) == [["gcs", "gcs", None, None, None, None, "5m"]]


# --------------------------------------------------------------------------- JSONPath
OBJ: dict[str, Any] = {
    "metadata": {"labels": {"app": "web", "app.kubernetes.io/name": "kubestash"}},
    "spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
    "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]},
}


@pytest.mark.parametrize(
    ("path", "values"),
    [
        (".metadata.labels.app", ["web"]),
        ("{.metadata.labels.app}", ["web"]),
        (".metadata.labels['app.kubernetes.io/name']", ["kubestash"]),
        (".metadata.labels.app\\.kubernetes\\.io/name", ["kubestash"]),
        (".spec.ports[0].port", [80]),
        (".spec.ports[-1].name", ["https"]),
        (".spec.ports[*].port", [80, 443]),
        (".spec.ports[5].port", []),
        ('.status.conditions[?(@.type=="Ready")].status', ["True"]),
        (".status.conditions[?(@.type!='Ready')].type", ["Synced"]),
        (".status.missing.deeper", []),
        (".metadata.labels.app.more", []),
    ],
)
def test_jsonpath(path: str, values: list[Any]) -> None:
    assert evaluate(path, OBJ) == values


def test_string_columns_join_several_values_and_print_non_strings() -> None:
    ports = to_table(BUILTIN[("", "Service")], [{"metadata": _meta("svc"), **OBJ}], now=NOW)
    assert _names(ports)[3] == "Port(s)"
    assert _cells(ports)[0][3] == "80,443"
