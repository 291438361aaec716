"""Valid sample objects for admission tests, built fresh for every use so tests can mutate them."""

from __future__ import annotations

from typing import Any

STORAGE = "storage.kubestash.com/v1alpha1"
CORE = "core.kubestash.com/v1alpha1"
ADDONS = "addons.kubestash.com/v1alpha1"


def meta(name: str, namespace: str | None = "demo") -> dict[str, Any]:
    return {"name": name, "namespace": namespace} if namespace else {"name": name}


def s3_storage(name: str = "s3-storage", namespace: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "BackupStorage",
        "metadata": meta(name, namespace),
        "spec": {
            "storage": {
                "provider": "s3",
                "s3": {"bucket": "kubestash", "region": "us-east-1", "prefix": "demo", "secretName": "s3-secret"},
            },
            **spec,
        },
    }


def local_storage(name: str = "local-storage") -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "BackupStorage",
        "metadata": meta(name),
        "spec": {"storage": {"provider": "local", "local": {"mountPath": "/safe/data", "hostPath": {"path": "/data"}}}},
    }


def gcs_storage() -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "BackupStorage",
        "metadata": meta("gcs-storage"),
        "spec": {"storage": {"provider": "gcs", "gcs": {"bucket": "b", "prefix": "p", "secretName": "gcs"}}},
    }


def azure_storage() -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "BackupStorage",
        "metadata": meta("azure-storage"),
        "spec": {"storage": {"provider": "azure", "azure": {"storageAccount": "acct", "container": "c"}}},
    }


def repository(name: str = "demo-repo", path: str = "/demo/app", storage: str = "s3-storage") -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "Repository",
        "metadata": meta(name),
        "spec": {
            "appRef": {"apiGroup": "apps", "kind": "Deployment", "name": "app", "namespace": "demo"},
            "storageRef": {"name": storage, "namespace": "demo"},
            "path": path,
            "encryptionSecret": {"name": "encrypt-secret", "namespace": "demo"},
        },
    }


def retention_policy(name: str = "demo-retention", namespace: str = "demo", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "RetentionPolicy",
        "metadata": meta(name, namespace),
        "spec": {"maxRetentionPeriod": "2mo", "successfulSnapshots": {"last": 10}, **spec},
    }


def snapshot() -> dict[str, Any]:
    return {
        "apiVersion": STORAGE,
        "kind": "Snapshot",
        "metadata": meta("demo-repo-sample-backup-frequent-1700000000"),
        "spec": {"repository": "demo-repo", "session": "frequent", "snapshotID": "01HG", "type": "FullBackup"},
        "status": {"phase": "Succeeded"},
    }


def session(name: str = "frequent-backup", repo: str = "demo-repo", directory: str = "/demo/app") -> dict[str, Any]:
    return {
        "name": name,
        "scheduler": {"schedule": "*/5 * * * *", "jobTemplate": {"backoffLimit": 1}},
        "repositories": [
            {"name": repo, "backend": "s3-backend", "directory": directory, "encryptionSecret": {"name": "enc"}}
        ],
        "addon": {"name": "workload-addon", "tasks": [{"name": "logical-backup"}]},
        "retryConfig": {"maxRetry": 2, "delay": "1m"},
    }


def backup_configuration(name: str = "sample-backup") -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "BackupConfiguration",
        "metadata": meta(name),
        "spec": {
            "target": {"apiGroup": "apps", "kind": "Deployment", "name": "app", "namespace": "demo"},
            "backends": [
                {
                    "name": "s3-backend",
                    "storageRef": {"name": "s3-storage", "namespace": "demo"},
                    "retentionPolicy": {"name": "demo-retention", "namespace": "demo"},
                }
            ],
            "sessions": [session()],
        },
    }


def backup_session() -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "BackupSession",
        "metadata": meta("sample-backup-frequent-backup-1700000000"),
        "spec": {
            "invoker": {"apiGroup": "core.kubestash.com", "kind": "BackupConfiguration", "name": "sample-backup"},
            "session": "frequent-backup",
        },
    }


def backup_batch() -> dict[str, Any]:
    bc = backup_configuration()["spec"]
    return {
        "apiVersion": CORE,
        "kind": "BackupBatch",
        "metadata": meta("batch"),
        "spec": {
            "backends": bc["backends"],
            "targets": [{"name": "app", "appRef": {"kind": "Deployment", "name": "app"}}],
            "sessions": [
                {
                    "name": "daily",
                    "scheduler": {"schedule": "@daily"},
                    "targets": [
                        {
                            "name": "app",
                            "addon": {"name": "workload-addon", "tasks": [{"name": "logical-backup"}]},
                            "repositories": [{"name": "app-repo", "backend": "s3-backend", "directory": "/app"}],
                        }
                    ],
                }
            ],
        },
    }


def restore_session(**data_source: Any) -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "RestoreSession",
        "metadata": meta("sample-restore"),
        "spec": {
            "target": {"apiGroup": "apps", "kind": "Deployment", "name": "app", "namespace": "demo"},
            "dataSource": data_source
            or {"repository": "demo-repo", "snapshot": "latest", "encryptionSecret": {"name": "enc"}},
            "addon": {"name": "workload-addon", "tasks": [{"name": "logical-backup-restore"}]},
        },
    }


def hook_template(executor: str = "Pod") -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "HookTemplate",
        "metadata": meta("notify"),
        "spec": {
            "action": {"exec": {"command": ["/bin/sh", "-c", "echo hi"]}},
            "executor": {
                "type": executor,
                "pod": {"selector": "app=demo,tier=web", "strategy": "ExecuteOnAll"},
                "function": {"name": "kubectl-exec"},
            },
        },
    }


def backup_blueprint() -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "BackupBlueprint",
        "metadata": meta("workload-blueprint"),
        "spec": {
            "usagePolicy": {"allowedNamespaces": {"from": "All"}},
            "backupConfigurationTemplate": {
                "deletionPolicy": "OnDelete",
                "backends": backup_configuration()["spec"]["backends"],
                "sessions": [session(directory="/dep/${namespace}/${targetName}")],
            },
        },
    }


def backup_verifier() -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "BackupVerifier",
        "metadata": meta("verifier"),
        "spec": {
            "restoreOption": {"addonInfo": {"name": "mysql-addon", "tasks": [{"name": "logical-backup-restore"}]}},
            "scheduler": {"schedule": "0 */2 * * *"},
            "function": "mysql-verify",
            "type": "Query",
            "query": {"mySQL": [{"database": "db", "table": "t", "rowCount": {"operator": "Gt", "value": 1}}]},
        },
    }


def verification_session() -> dict[str, Any]:
    return {
        "apiVersion": CORE,
        "kind": "BackupVerificationSession",
        "metadata": meta("frequent-backup-demo-repo-1700000000"),
        "spec": {
            "invoker": {"apiGroup": "core.kubestash.com", "kind": "BackupConfiguration", "name": "sample-backup"},
            "session": "frequent-backup",
            "repository": "demo-repo",
            "snapshot": "demo-repo-sample-backup-frequent-backup-1700000000",
        },
    }


def addon() -> dict[str, Any]:
    return {
        "apiVersion": ADDONS,
        "kind": "Addon",
        "metadata": meta("workload-addon", None),
        "spec": {
            "backupTasks": [{"name": "logical-backup", "function": "workload-backup", "executor": "Job"}],
            "restoreTasks": [{"name": "logical-backup-restore", "function": "workload-restore", "executor": "Job"}],
        },
    }


def function() -> dict[str, Any]:
    return {
        "apiVersion": ADDONS,
        "kind": "Function",
        "metadata": meta("workload-backup", None),
        "spec": {"image": "ghcr.io/kubestash/workload:v0.1", "args": ["backup", "--paths=${paths:=}"]},
    }
