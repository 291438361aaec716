"""One invalid manifest per admission rule or schema constraint; each must be rejected at its field.

Every case starts from a valid object (see ``manifests.py``), changes one
thing, and asserts the error names exactly that field -- the thing a user
needs to find the mistake.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import manifests as m
import pytest

from kubestash.api.admission import StaticLookup, review
from kubestash.api.registry import lookup_kind
from kubestash.api.resource import Resource

DELETE = object()


def edit(obj: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``{"spec.a[0].b": value}`` changes; DELETE removes the key."""
    for path, value in changes.items():
        parts = [p for p in re.split(r"\.|\[(\d+)\]", path) if p]
        node: Any = obj
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        last = parts[-1]
        if value is DELETE:
            del node[int(last) if last.isdigit() else last]
        elif last.isdigit() and int(last) == len(node):
            node.append(value)
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
    return obj


def decode(data: dict[str, Any]) -> Resource:
    info = lookup_kind(data["apiVersion"], data["kind"])
    assert info is not None
    return info.decode(data)


@dataclass
class Case:
    id: str
    build: Callable[[], dict[str, Any]]
    changes: dict[str, Any]
    path: str
    others: list[Callable[[], dict[str, Any]]] = field(default_factory=list)
    old: Callable[[], dict[str, Any]] | None = None
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)
    reason: str = ""
    """A fragment the message must contain, where the wording matters to the user."""


def _in_use_storage() -> dict[str, Any]:
    obj = m.s3_storage()
    obj["status"] = {"repositories": [{"name": "demo-repo", "namespace": "demo", "path": "/demo/app"}]}
    return obj


def _other_ns(build: Callable[[], dict[str, Any]], **spec: Any) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        obj = build()
        obj["metadata"]["namespace"] = "team-a"
        obj["spec"].update(spec)
        return obj

    return make


SESSION = "spec.sessions[0]"
REPO = f"{SESSION}.repositories[0]"
SELECTOR_POLICY = {"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"backup": "yes"}}}}

CASES = [
    # ---------------------------------------------------------------- metadata
    Case("metadata-name-missing", m.s3_storage, {"metadata.name": DELETE}, "metadata.name"),
    Case("metadata-name-uppercase", m.s3_storage, {"metadata.name": "My_Storage"}, "metadata.name", reason="RFC 1123"),
    Case("metadata-namespace-invalid", m.s3_storage, {"metadata.namespace": "Demo!"}, "metadata.namespace"),
    Case("cluster-scoped-with-namespace", m.function, {"metadata.namespace": "demo"}, "metadata.namespace"),
    Case("kind-in-wrong-group", m.repository, {"apiVersion": "core.kubestash.com/v1alpha1"}, "kind"),
    Case("unknown-top-level-field", m.s3_storage, {"spec.storages": {}}, "spec.storages", reason="unknown field"),
    # ----------------------------------------------------------- BackupStorage
    Case("storage-provider-missing", m.s3_storage, {"spec.storage.provider": DELETE}, "spec.storage.provider"),
    Case("storage-provider-unknown", m.s3_storage, {"spec.storage.provider": "ftp"}, "spec.storage.provider"),
    Case("storage-section-missing", m.s3_storage, {"spec.storage.s3": DELETE}, "spec.storage.s3"),
    Case("storage-extra-section", m.s3_storage, {"spec.storage.gcs": {"bucket": "x"}}, "spec.storage.gcs"),
    Case("s3-bucket-missing", m.s3_storage, {"spec.storage.s3.bucket": DELETE}, "spec.storage.s3.bucket"),
    Case("s3-unknown-field", m.s3_storage, {"spec.storage.s3.bukket": "x"}, "spec.storage.s3.bukket"),
    Case(
        "s3-insecure-tls-not-bool",
        m.s3_storage,
        {"spec.storage.s3.insecureTLS": "maybe"},
        "spec.storage.s3.insecureTLS",
    ),
    Case(
        "s3-max-connections-negative",
        m.s3_storage,
        {"spec.storage.s3.maxConnections": -1},
        "spec.storage.s3.maxConnections",
    ),
    Case("gcs-bucket-missing", m.gcs_storage, {"spec.storage.gcs.bucket": DELETE}, "spec.storage.gcs.bucket"),
    Case(
        "azure-account-missing",
        m.azure_storage,
        {"spec.storage.azure.storageAccount": DELETE},
        "spec.storage.azure.storageAccount",
    ),
    Case(
        "azure-container-missing",
        m.azure_storage,
        {"spec.storage.azure.container": DELETE},
        "spec.storage.azure.container",
    ),
    Case(
        "local-mount-path-missing",
        m.local_storage,
        {"spec.storage.local.mountPath": DELETE},
        "spec.storage.local.mountPath",
    ),
    Case(
        "local-mount-path-relative",
        m.local_storage,
        {"spec.storage.local.mountPath": "data"},
        "spec.storage.local.mountPath",
    ),
    Case("local-volume-source-missing", m.local_storage, {"spec.storage.local.hostPath": DELETE}, "spec.storage.local"),
    Case(
        "storage-deletion-policy",
        m.s3_storage,
        {"spec.deletionPolicy": "Keep"},
        "spec.deletionPolicy",
        reason='"WipeOut"',
    ),
    Case(
        "storage-usage-selector-missing",
        m.s3_storage,
        {"spec.usagePolicy": {"allowedNamespaces": {"from": "Selector"}}},
        "spec.usagePolicy.allowedNamespaces.selector",
    ),
    Case(
        "storage-usage-from-unknown",
        m.s3_storage,
        {"spec.usagePolicy": {"allowedNamespaces": {"from": "Everyone"}}},
        "spec.usagePolicy.allowedNamespaces.from",
    ),
    Case(
        "storage-second-default",
        m.s3_storage,
        {"spec.default": True},
        "spec.default",
        others=[lambda: m.gcs_storage() | {"spec": {**m.gcs_storage()["spec"], "default": True}}],
        reason="multiple default BackupStorages",
    ),
    Case(
        "storage-in-use-immutable",
        m.s3_storage,
        {"spec.storage.s3.bucket": "elsewhere"},
        "spec.storage",
        old=_in_use_storage,
        reason="currently in use",
    ),
    Case(
        "storage-same-directory-other-namespace",
        m.s3_storage,
        {},
        "spec.storage",
        others=[_other_ns(m.s3_storage)],
        reason="same directory",
    ),
    Case(
        "storage-same-directory-trailing-slash",
        m.s3_storage,
        {"spec.storage.s3.prefix": "demo/"},
        "spec.storage",
        others=[_other_ns(m.s3_storage)],
    ),
    # -------------------------------------------------------------- Repository
    Case("repository-storage-ref-missing", m.repository, {"spec.storageRef": DELETE}, "spec.storageRef"),
    Case("repository-storage-ref-name-missing", m.repository, {"spec.storageRef.name": DELETE}, "spec.storageRef.name"),
    Case("repository-path-missing", m.repository, {"spec.path": DELETE}, "spec.path"),
    Case("repository-path-dotdot", m.repository, {"spec.path": "/demo/../etc"}, "spec.path"),
    Case("repository-path-immutable", m.repository, {"spec.path": "/demo/other"}, "spec.path", old=m.repository),
    Case(
        "repository-path-taken",
        m.repository,
        {},
        "spec.path",
        others=[lambda: m.repository(name="other-repo")],
    ),
    Case("repository-deletion-policy", m.repository, {"spec.deletionPolicy": "Retain"}, "spec.deletionPolicy"),
    # --------------------------------------------------------- RetentionPolicy
    Case("retention-period-syntax", m.retention_policy, {"spec.maxRetentionPeriod": "1x"}, "spec.maxRetentionPeriod"),
    Case(
        "retention-period-unit-twice",
        m.retention_policy,
        {"spec.maxRetentionPeriod": "1d2d"},
        "spec.maxRetentionPeriod",
    ),
    Case(
        "retention-nothing-to-keep",
        m.retention_policy,
        {"spec.maxRetentionPeriod": DELETE, "spec.successfulSnapshots": DELETE},
        "spec",
    ),
    Case(
        "retention-last-negative",
        m.retention_policy,
        {"spec.successfulSnapshots.last": -1},
        "spec.successfulSnapshots.last",
    ),
    Case(
        "retention-failed-negative",
        m.retention_policy,
        {"spec.failedSnapshots": {"last": -2}},
        "spec.failedSnapshots.last",
    ),
    Case(
        "retention-keep-last-typo",
        m.retention_policy,
        {"spec.successfulSnapshots.keepLast": 3},
        "spec.successfulSnapshots.keepLast",
    ),
    Case(
        "retention-second-default",
        m.retention_policy,
        {"spec.default": True},
        "spec.default",
        others=[lambda: m.retention_policy(name="other", default=True)],
    ),
    Case(
        "retention-usage-selector-missing",
        m.retention_policy,
        {"spec.usagePolicy": {"allowedNamespaces": {"from": "Selector"}}},
        "spec.usagePolicy.allowedNamespaces.selector",
    ),
    # ----------------------------------------------------- BackupConfiguration
    Case("bc-backends-missing-no-default", m.backup_configuration, {"spec.backends": DELETE}, "spec.backends"),
    Case(
        "bc-backend-names-duplicate",
        m.backup_configuration,
        {"spec.backends[1]": m.backup_configuration()["spec"]["backends"][0]},
        "spec.backends[1].name",
    ),
    Case(
        "bc-backend-storage-missing",
        m.backup_configuration,
        {"spec.backends[0].storageRef": DELETE},
        "spec.backends[0].storageRef",
    ),
    Case(
        "bc-backend-retention-missing",
        m.backup_configuration,
        {"spec.backends[0].retentionPolicy": DELETE},
        "spec.backends[0].retentionPolicy",
    ),
    Case(
        "bc-backend-storage-not-shared",
        m.backup_configuration,
        {"spec.backends[0].storageRef.namespace": "team-a"},
        "spec.backends[0].storageRef",
        others=[_other_ns(m.s3_storage)],
        reason="usagePolicy",
    ),
    Case(
        "bc-backend-retention-selector-mismatch",
        m.backup_configuration,
        {"spec.backends[0].retentionPolicy.namespace": "team-a"},
        "spec.backends[0].retentionPolicy",
        others=[lambda: m.retention_policy(namespace="team-a", usagePolicy=SELECTOR_POLICY)],
        namespaces={"demo": {"backup": "no"}},
    ),
    Case("bc-sessions-missing", m.backup_configuration, {"spec.sessions": []}, "spec.sessions"),
    Case("bc-session-name-missing", m.backup_configuration, {f"{SESSION}.name": DELETE}, f"{SESSION}.name"),
    Case(
        "bc-session-names-duplicate",
        m.backup_configuration,
        {"spec.sessions[1]": m.session(repo="other", directory="/other")},
        "spec.sessions[1].name",
    ),
    Case("bc-scheduler-missing", m.backup_configuration, {f"{SESSION}.scheduler": DELETE}, f"{SESSION}.scheduler"),
    Case(
        "bc-schedule-syntax",
        m.backup_configuration,
        {f"{SESSION}.scheduler.schedule": "*/5 * * *"},
        f"{SESSION}.scheduler.schedule",
    ),
    Case(
        "bc-schedule-minute-range",
        m.backup_configuration,
        {f"{SESSION}.scheduler.schedule": "75 * * * *"},
        f"{SESSION}.scheduler.schedule",
    ),
    Case(
        "bc-schedule-descriptor",
        m.backup_configuration,
        {f"{SESSION}.scheduler.schedule": "@fortnightly"},
        f"{SESSION}.scheduler.schedule",
    ),
    Case(
        "bc-concurrency-policy",
        m.backup_configuration,
        {f"{SESSION}.scheduler.concurrencyPolicy": "Sometimes"},
        f"{SESSION}.scheduler.concurrencyPolicy",
    ),
    Case(
        "bc-starting-deadline-negative",
        m.backup_configuration,
        {f"{SESSION}.scheduler.startingDeadlineSeconds": -5},
        f"{SESSION}.scheduler.startingDeadlineSeconds",
    ),
    Case(
        "bc-job-backoff-negative",
        m.backup_configuration,
        {f"{SESSION}.scheduler.jobTemplate.backoffLimit": -1},
        f"{SESSION}.scheduler.jobTemplate.backoffLimit",
    ),
    Case("bc-addon-missing", m.backup_configuration, {f"{SESSION}.addon": DELETE}, f"{SESSION}.addon"),
    Case("bc-addon-name-missing", m.backup_configuration, {f"{SESSION}.addon.name": DELETE}, f"{SESSION}.addon.name"),
    Case("bc-addon-tasks-empty", m.backup_configuration, {f"{SESSION}.addon.tasks": []}, f"{SESSION}.addon.tasks"),
    Case(
        "bc-task-name-missing",
        m.backup_configuration,
        {f"{SESSION}.addon.tasks[0].name": DELETE},
        f"{SESSION}.addon.tasks[0].name",
    ),
    Case("bc-repositories-empty", m.backup_configuration, {f"{SESSION}.repositories": []}, f"{SESSION}.repositories"),
    Case("bc-repository-name-missing", m.backup_configuration, {f"{REPO}.name": DELETE}, f"{REPO}.name"),
    Case(
        "bc-repository-backend-unknown", m.backup_configuration, {f"{REPO}.backend": "gcs-backend"}, f"{REPO}.backend"
    ),
    Case("bc-repository-directory-missing", m.backup_configuration, {f"{REPO}.directory": DELETE}, f"{REPO}.directory"),
    Case(
        "bc-repository-names-duplicate",
        m.backup_configuration,
        {f"{SESSION}.repositories[1]": {"name": "demo-repo", "backend": "s3-backend", "directory": "/other"}},
        f"{SESSION}.repositories[1].name",
    ),
    Case(
        "bc-repository-directory-shared",
        m.backup_configuration,
        {f"{SESSION}.repositories[1]": {"name": "second", "backend": "s3-backend", "directory": "/demo/app/"}},
        f"{SESSION}.repositories[1].directory",
    ),
    Case(
        "bc-repository-deletion-policy",
        m.backup_configuration,
        {f"{REPO}.deletionPolicy": "Keep"},
        f"{REPO}.deletionPolicy",
    ),
    Case(
        "bc-repository-exists-elsewhere",
        m.backup_configuration,
        {},
        f"{REPO}.name",
        others=[lambda: m.repository(path="/demo/app", storage="gcs-storage")],
        reason="already exists",
    ),
    Case(
        "bc-repository-directory-taken",
        m.backup_configuration,
        {},
        f"{REPO}.directory",
        others=[lambda: m.repository(name="someone-else", path="/demo/app")],
    ),
    Case("bc-backup-timeout", m.backup_configuration, {f"{SESSION}.backupTimeout": "10"}, f"{SESSION}.backupTimeout"),
    Case(
        "bc-retry-zero",
        m.backup_configuration,
        {f"{SESSION}.retryConfig.maxRetry": 0},
        f"{SESSION}.retryConfig.maxRetry",
    ),
    Case(
        "bc-retry-delay",
        m.backup_configuration,
        {f"{SESSION}.retryConfig.delay": "soon"},
        f"{SESSION}.retryConfig.delay",
    ),
    Case(
        "bc-history-limit-negative",
        m.backup_configuration,
        {f"{SESSION}.sessionHistoryLimit": -1},
        f"{SESSION}.sessionHistoryLimit",
    ),
    Case(
        "bc-hook-template-missing",
        m.backup_configuration,
        {f"{SESSION}.hooks": {"preBackup": [{"name": "pre"}]}},
        f"{SESSION}.hooks.preBackup[0].hookTemplate",
    ),
    Case(
        "bc-hook-execution-policy",
        m.backup_configuration,
        {
            f"{SESSION}.hooks": {
                "postBackup": [{"name": "p", "hookTemplate": {"name": "notify"}, "executionPolicy": "Never"}]
            }
        },
        f"{SESSION}.hooks.postBackup[0].executionPolicy",
    ),
    Case(
        "bc-hook-template-not-shared",
        m.backup_configuration,
        {
            f"{SESSION}.hooks": {
                "preBackup": [{"name": "pre", "hookTemplate": {"name": "notify", "namespace": "team-a"}}]
            }
        },
        f"{SESSION}.hooks.preBackup[0].hookTemplate",
        others=[_other_ns(m.hook_template)],
    ),
    Case("bc-target-kind-missing", m.backup_configuration, {"spec.target.kind": DELETE}, "spec.target.kind"),
    # ----------------------------------------------------------- BackupSession
    Case("session-invoker-kind", m.backup_session, {"spec.invoker.kind": "Deployment"}, "spec.invoker.kind"),
    Case("session-invoker-missing", m.backup_session, {"spec.invoker": DELETE}, "spec.invoker"),
    Case("session-name-missing", m.backup_session, {"spec.session": DELETE}, "spec.session"),
    Case(
        "session-spec-immutable",
        m.backup_session,
        {"spec.session": "other"},
        "spec",
        old=m.backup_session,
        reason="immutable",
    ),
    # ---------------------------------------------------------- RestoreSession
    Case("restore-data-source-missing", m.restore_session, {"spec.dataSource": DELETE}, "spec.dataSource"),
    Case(
        "restore-snapshot-missing", m.restore_session, {"spec.dataSource.snapshot": DELETE}, "spec.dataSource.snapshot"
    ),
    Case(
        "restore-latest-needs-repository",
        m.restore_session,
        {"spec.dataSource.repository": DELETE},
        "spec.dataSource.repository",
    ),
    Case(
        "restore-pitr-time-missing",
        m.restore_session,
        {"spec.dataSource.pitr": {"exclusive": True}, "spec.dataSource.snapshot": DELETE},
        "spec.dataSource.pitr.targetTime",
    ),
    Case(
        "restore-pitr-needs-repository",
        m.restore_session,
        {"spec.dataSource": {"pitr": {"targetTime": "2026-11-20T10:00:00Z"}}},
        "spec.dataSource.repository",
    ),
    Case(
        "restore-pitr-time-format",
        m.restore_session,
        {"spec.dataSource.pitr": {"targetTime": "yesterday"}},
        "spec.dataSource.pitr.targetTime",
    ),
    Case(
        "restore-components-duplicate",
        m.restore_session,
        {"spec.dataSource.components": ["dump", "dump"]},
        "spec.dataSource.components[1]",
    ),
    Case("restore-addon-missing", m.restore_session, {"spec.addon": DELETE}, "spec.addon"),
    Case("restore-timeout", m.restore_session, {"spec.restoreTimeout": "1 hour"}, "spec.restoreTimeout"),
    Case(
        "restore-repository-storage-not-shared",
        m.restore_session,
        {"spec.dataSource.namespace": "team-a"},
        "spec.dataSource.repository",
        others=[
            _other_ns(m.repository, storageRef={"name": "s3-storage", "namespace": "team-a"}),
            _other_ns(m.s3_storage),
        ],
    ),
    # ------------------------------------------------------------ HookTemplate
    Case("hook-executor-missing", m.hook_template, {"spec.executor": DELETE}, "spec.executor"),
    Case("hook-executor-type", m.hook_template, {"spec.executor.type": "Cron"}, "spec.executor.type"),
    Case(
        "hook-function-missing",
        lambda: m.hook_template("Function"),
        {"spec.executor.function": DELETE},
        "spec.executor.function.name",
    ),
    Case(
        "hook-pod-selector-missing",
        m.hook_template,
        {"spec.executor.pod.selector": DELETE},
        "spec.executor.pod.selector",
    ),
    Case(
        "hook-pod-selector-syntax", m.hook_template, {"spec.executor.pod.selector": "app"}, "spec.executor.pod.selector"
    ),
    Case(
        "hook-pod-strategy",
        m.hook_template,
        {"spec.executor.pod.strategy": "ExecuteOnSome"},
        "spec.executor.pod.strategy",
    ),
    Case("hook-action-missing", m.hook_template, {"spec.action": DELETE}, "spec.action"),
    Case("hook-two-actions", m.hook_template, {"spec.action.httpGet": {"port": 80}}, "spec.action.httpGet"),
    Case(
        "hook-port-range",
        m.hook_template,
        {"spec.action": {"tcpSocket": {"port": 70000}}},
        "spec.action.tcpSocket.port",
    ),
    Case("hook-port-type", m.hook_template, {"spec.action": {"httpGet": {"port": [80]}}}, "spec.action.httpGet.port"),
    Case(
        "hook-http-scheme",
        m.hook_template,
        {"spec.action": {"httpPost": {"port": 443, "scheme": "FTP"}}},
        "spec.action.httpPost.scheme",
    ),
    Case("hook-exec-command-missing", m.hook_template, {"spec.action.exec.command": []}, "spec.action.exec.command"),
    # --------------------------------------------------------- BackupBlueprint
    Case(
        "blueprint-template-missing",
        m.backup_blueprint,
        {"spec.backupConfigurationTemplate": DELETE},
        "spec.backupConfigurationTemplate",
    ),
    Case(
        "blueprint-scheduler-missing",
        m.backup_blueprint,
        {"spec.backupConfigurationTemplate.sessions[0].scheduler": DELETE},
        "spec.backupConfigurationTemplate.sessions[0].scheduler",
    ),
    Case(
        "blueprint-usage-selector-missing",
        m.backup_blueprint,
        {"spec.usagePolicy.allowedNamespaces.from": "Selector"},
        "spec.usagePolicy.allowedNamespaces.selector",
    ),
    Case(
        "blueprint-deletion-policy",
        m.backup_blueprint,
        {"spec.backupConfigurationTemplate.deletionPolicy": "Never"},
        "spec.backupConfigurationTemplate.deletionPolicy",
    ),
    # ---------------------------------------------------- BackupVerifier / BVS
    Case("verifier-restore-option-missing", m.backup_verifier, {"spec.restoreOption": DELETE}, "spec.restoreOption"),
    Case("verifier-scheduler-missing", m.backup_verifier, {"spec.scheduler": DELETE}, "spec.scheduler"),
    Case("verifier-type-missing", m.backup_verifier, {"spec.type": DELETE}, "spec.type"),
    Case("verifier-type-unknown", m.backup_verifier, {"spec.type": "Ping"}, "spec.type"),
    Case("verifier-query-missing", m.backup_verifier, {"spec.query": DELETE}, "spec.query"),
    Case("verifier-script-location", m.backup_verifier, {"spec.type": "Script"}, "spec.script.location"),
    Case(
        "verification-session-immutable",
        m.verification_session,
        {"spec.snapshot": "another"},
        "spec",
        old=m.verification_session,
    ),
    # --------------------------------------------------------- BackupBatch
    Case(
        "batch-session-target-unknown",
        m.backup_batch,
        {"spec.sessions[0].targets[0].name": "db"},
        "spec.sessions[0].targets[0].name",
    ),
    Case("batch-targets-missing", m.backup_batch, {"spec.targets": DELETE}, "spec.targets"),
    # ------------------------------------------------------- Snapshot / Addon / Function
    Case("snapshot-type", m.snapshot, {"spec.type": "PartialBackup"}, "spec.type"),
    Case("snapshot-status-phase", m.snapshot, {"status.phase": "Done"}, "status.phase"),
    Case(
        "addon-task-function-missing", m.addon, {"spec.backupTasks[0].function": DELETE}, "spec.backupTasks[0].function"
    ),
    Case(
        "addon-task-names-duplicate",
        m.addon,
        {"spec.restoreTasks[1]": {"name": "logical-backup-restore", "function": "f"}},
        "spec.restoreTasks[1].name",
    ),
    Case("addon-executor", m.addon, {"spec.backupTasks[0].executor": "Pod"}, "spec.backupTasks[0].executor"),
    Case("function-image-missing", m.function, {"spec.image": DELETE}, "spec.image"),
]


def test_enough_cases() -> None:
    assert len(CASES) >= 60
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_valid_base_is_accepted(case: Case) -> None:
    """The unchanged object passes, so the rejection below is due to the one change."""
    old = case.old() if case.old else None
    result = review(case.build(), StaticLookup([], case.namespaces), old=old)
    assert result.errors == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_invalid_manifest_is_rejected_at_field(case: Case) -> None:
    obj = edit(case.build(), case.changes)
    lookup = StaticLookup([decode(b()) for b in case.others], case.namespaces)
    result = review(obj, lookup, old=case.old() if case.old else None)
    paths = [e.path for e in result.errors]
    assert case.path in paths, f"expected an error at {case.path}, got {[e.message for e in result.errors]}"
    error = next(e for e in result.errors if e.path == case.path)
    assert case.reason in error.message
    assert error.message.startswith(f"{case.path}: ")
