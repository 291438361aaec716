"""Admission behaviour beyond single-field rejections: defaulting, lookups, error reporting."""

from __future__ import annotations

from typing import Any

import manifests as m
import pytest

from kubestash.api.admission import AdmissionError, StaticLookup, admit, review
from kubestash.api.backup import BackupConfiguration
from kubestash.api.registry import lookup_kind
from kubestash.api.resource import Resource
from kubestash.api.storage import BackupStorage, RetentionPolicy


def decode(data: dict[str, Any]) -> Resource:
    info = lookup_kind(data["apiVersion"], data["kind"])
    assert info is not None
    return info.decode(data)


def default_storage(name: str, namespace: str, policy: dict[str, Any] | None = None) -> Resource:
    obj = m.s3_storage(name, namespace, default=True)
    obj["spec"]["storage"]["s3"]["prefix"] = f"{namespace}/{name}"
    if policy is not None:
        obj["spec"]["usagePolicy"] = policy
    return decode(obj)


def bc_without_backends() -> dict[str, Any]:
    obj = m.backup_configuration()
    del obj["spec"]["backends"]
    obj["spec"]["sessions"][0]["repositories"][0]["backend"] = ""
    return obj


def test_backup_storage_defaults_usage_policy_and_trims_slashes() -> None:
    obj = m.s3_storage()
    obj["spec"]["storage"]["s3"].update(bucket="kubestash/", prefix="demo/", endpoint="https://s3.example.com/")
    admitted = admit(obj, StaticLookup())
    wire = admitted.to_wire()
    assert wire["spec"]["usagePolicy"] == {"allowedNamespaces": {"from": "Same"}}
    s3 = wire["spec"]["storage"]["s3"]
    assert (s3["bucket"], s3["prefix"], s3["endpoint"]) == ("kubestash", "demo", "https://s3.example.com")
    assert wire["spec"]["deletionPolicy"] == "Delete"


def test_retention_policy_defaults_failed_snapshots() -> None:
    wire = admit(m.retention_policy(), StaticLookup()).to_wire()
    assert wire["spec"]["failedSnapshots"] == {"last": 1}
    assert wire["spec"]["usagePolicy"]["allowedNamespaces"]["from"] == "Same"


def test_schema_defaults_are_stored_but_unset_strings_are_not() -> None:
    obj = m.backup_configuration()
    obj["spec"]["sessions"][0]["hooks"] = {"preBackup": [{"name": "pre", "hookTemplate": {"name": "notify"}}]}
    wire = admit(obj, StaticLookup()).to_wire()
    session = wire["spec"]["sessions"][0]
    assert session["sessionHistoryLimit"] == 1
    assert session["hooks"]["preBackup"][0]["executionPolicy"] == "Always"
    assert "deletionPolicy" not in session["repositories"][0]


def test_default_backend_prefers_own_namespace() -> None:
    lookup = StaticLookup(
        [
            default_storage("shared", "backup", {"allowedNamespaces": {"from": "All"}}),
            default_storage("own", "demo"),
            decode(m.retention_policy(default=True)),
        ]
    )
    admitted = admit(bc_without_backends(), lookup)
    assert isinstance(admitted, BackupConfiguration)
    backends = admitted.to_wire()["spec"]["backends"]
    assert backends == [
        {
            "name": "",
            "storageRef": {"namespace": "demo", "name": "own"},
            "retentionPolicy": {"namespace": "demo", "name": "demo-retention"},
        }
    ]


def test_default_backend_selector_before_all() -> None:
    selector = {"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}
    lookup = StaticLookup(
        [
            default_storage("everyone", "backup", {"allowedNamespaces": {"from": "All"}}),
            default_storage("team-a", "ops", selector),
            decode(
                m.retention_policy(namespace="ops", default=True, usagePolicy={"allowedNamespaces": {"from": "All"}})
            ),
        ],
        namespaces={"demo": {"team": "a"}},
    )
    backend = admit(bc_without_backends(), lookup).to_wire()["spec"]["backends"][0]
    assert backend["storageRef"] == {"namespace": "ops", "name": "team-a"}
    assert backend["retentionPolicy"] == {"namespace": "ops", "name": "demo-retention"}


def test_default_backend_ignores_storage_not_shared_with_namespace() -> None:
    lookup = StaticLookup([default_storage("private", "ops")])
    result = review(bc_without_backends(), lookup)
    assert [e.path for e in result.errors] == ["spec.backends"]
    assert 'no default BackupStorage is usable from namespace "demo"' in result.errors[0].message


def test_offline_lookup_does_not_reject_for_absent_defaults() -> None:
    result = review(bc_without_backends(), StaticLookup(complete=False))
    assert result.errors == []


def test_selector_usage_policy_admits_matching_namespace() -> None:
    policy = {
        "allowedNamespaces": {
            "from": "Selector",
            "selector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
        }
    }
    storage = m.s3_storage(namespace="backup", usagePolicy=policy)
    obj = m.backup_configuration()
    obj["spec"]["backends"][0]["storageRef"]["namespace"] = "backup"
    allowed = review(obj, StaticLookup([decode(storage)], {"demo": {"env": "prod"}}))
    denied = review(obj, StaticLookup([decode(storage)], {"demo": {"env": "dev"}}))
    unknown = review(obj, StaticLookup([decode(storage)]))
    assert allowed.errors == []
    assert [e.path for e in denied.errors] == ["spec.backends[0].storageRef"]
    assert unknown.errors == [], "a namespace whose labels are unknown cannot be judged"


def test_every_problem_is_reported_at_once() -> None:
    obj = m.backup_configuration()
    session = obj["spec"]["sessions"][0]
    session["scheduler"]["schedule"] = "every day"
    session["addon"]["tasks"] = []
    session["repositories"][0]["directory"] = ""
    result = review(obj, StaticLookup())
    assert sorted(e.path for e in result.errors) == [
        "spec.sessions[0].addon.tasks",
        "spec.sessions[0].repositories[0].directory",
        "spec.sessions[0].scheduler.schedule",
    ]


def test_admission_error_renders_kubernetes_status() -> None:
    obj = m.retention_policy(maxRetentionPeriod="forever")
    with pytest.raises(AdmissionError) as caught:
        admit(obj, StaticLookup())
    status = caught.value.status()
    assert status["code"] == 422
    assert status["reason"] == "Invalid"
    assert status["details"]["kind"] == "RetentionPolicy"
    assert status["details"]["group"] == "storage.kubestash.com"
    assert status["details"]["causes"][0]["field"] == "spec.maxRetentionPeriod"
    assert status["message"].startswith('RetentionPolicy.storage.kubestash.com "demo-retention" is invalid: ')


def test_namespace_from_request_fills_missing_namespace() -> None:
    obj = m.retention_policy()
    del obj["metadata"]["namespace"]
    admitted = admit(obj, StaticLookup(), namespace="team-b")
    assert isinstance(admitted, RetentionPolicy)
    assert admitted.namespace == "team-b"


def test_update_of_unused_storage_may_change_backend() -> None:
    old = m.s3_storage()
    new = m.s3_storage()
    new["spec"]["storage"]["s3"]["bucket"] = "elsewhere"
    admitted = admit(new, StaticLookup(), old=old)
    assert isinstance(admitted, BackupStorage)
    assert admitted.spec.storage.s3 is not None and admitted.spec.storage.s3.bucket == "elsewhere"


def test_same_object_is_not_its_own_duplicate() -> None:
    storage = m.s3_storage(default=True)
    assert review(storage, StaticLookup([decode(storage)])).errors == []


def test_unknown_kind_is_reported_not_raised() -> None:
    result = review({"apiVersion": "core.kubestash.com/v1alpha1", "kind": "BackupPlan", "metadata": {"name": "x"}})
    assert [e.path for e in result.errors] == ["kind"]
