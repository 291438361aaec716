"""Every KubeStash kind with the names Kubernetes serves it under.

This table is the single source for CRD generation, decoding manifests, the
bundled API server's discovery and the CLI's printer columns. Names, scopes,
categories and columns are KubeStash's, including its quirks (the plural of
BackupVerificationSession and BackupVerifier equals the singular; HookTemplate
shows a Timeout column for a field that does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kubestash.api.addons import Addon, Function
from kubestash.api.backup import BackupBatch, BackupBlueprint, BackupConfiguration, BackupSession
from kubestash.api.hooks import HookTemplate
from kubestash.api.resource import Resource
from kubestash.api.restore import RestoreSession
from kubestash.api.storage import BackupStorage, Repository, RetentionPolicy, Snapshot
from kubestash.api.verification import BackupVerificationSession, BackupVerifier

KUBESTASH_GROUPS = ("storage.kubestash.com", "core.kubestash.com", "addons.kubestash.com")


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    type: Literal["string", "boolean", "integer", "number", "date"]
    json_path: str


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")
PHASE = PrinterColumn("Phase", "string", ".status.phase")
DURATION = PrinterColumn("Duration", "string", ".status.duration")


@dataclass(frozen=True)
class KindInfo:
    model: type[Resource]
    plural: str
    singular: str
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("kubestash", "appscode", "all")
    columns: tuple[PrinterColumn, ...] = ()
    status_subresource: bool = False

    @property
    def kind(self) -> str:
        return self.model.KIND

    @property
    def api_version(self) -> str:
        return self.model.API_VERSION

    @property
    def group(self) -> str:
        return self.api_version.split("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.split("/")[1]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def namespaced(self) -> bool:
        return self.scope == "Namespaced"

    def decode(self, obj: dict[str, Any]) -> Resource:
        return self.model.model_validate(obj)


KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        BackupStorage,
        "backupstorages",
        "backupstorage",
        columns=(
            PrinterColumn("Provider", "string", ".spec.storage.provider"),
            PrinterColumn("Default", "boolean", ".spec.default"),
            PrinterColumn("Deletion-Policy", "string", ".spec.deletionPolicy"),
            PrinterColumn("Total-Size", "string", ".status.totalSize"),
            PHASE,
            AGE,
        ),
        status_subresource=True,
    ),
    KindInfo(
        Repository,
        "repositories",
        "repository",
        short_names=("repo",),
        columns=(
            PrinterColumn("Integrity", "boolean", ".status.integrity"),
            PrinterColumn("Snapshot-Count", "integer", ".status.snapshotCount"),
            PrinterColumn("Size", "string", ".status.size"),
            PHASE,
            PrinterColumn("Last-Successful-Backup", "date", ".status.lastBackupTime"),
            AGE,
        ),
        status_subresource=True,
    ),
    KindInfo(
        RetentionPolicy,
        "retentionpolicies",
        "retentionpolicy",
        categories=("kubestash", "appscode"),
        columns=(
            PrinterColumn("Max-Retention-Period", "string", ".spec.maxRetentionPeriod"),
            PrinterColumn("Default", "boolean", ".spec.default"),
            AGE,
        ),
    ),
    KindInfo(
        Snapshot,
        "snapshots",
        "snapshot",
        categories=("kubestash", "appscode"),
        columns=(
            PrinterColumn("Repository", "string", ".spec.repository"),
            PrinterColumn("Session", "string", ".spec.session"),
            PrinterColumn("Snapshot-Time", "string", ".status.snapshotTime"),
            PrinterColumn("Deletion-Policy", "string", ".spec.deletionPolicy"),
            PHASE,
            AGE,
        ),
        status_subresource=True,
    ),
    KindInfo(
        BackupConfiguration,
        "backupconfigurations",
        "backupconfiguration",
        short_names=("bc",),
        columns=(PHASE, PrinterColumn("Paused", "boolean", ".spec.paused"), AGE),
        status_subresource=True,
    ),
    KindInfo(
        BackupSession,
        "backupsessions",
        "backupsession",
        columns=(
            PrinterColumn("Invoker-Type", "string", ".spec.invoker.kind"),
            PrinterColumn("Invoker-Name", "string", ".spec.invoker.name"),
            PHASE,
            DURATION,
            AGE,
        ),
        status_subresource=True,
    ),
    KindInfo(
        RestoreSession,
        "restoresessions",
        "restoresession",
        short_names=("restore",),
        columns=(
            PrinterColumn("Repository", "string", ".spec.dataSource.repository"),
            PHASE,
            DURATION,
            AGE,
        ),
        status_subresource=True,
    ),
    KindInfo(
        HookTemplate,
        "hooktemplates",
        "hooktemplate",
        columns=(
            PrinterColumn("Executor", "string", ".spec.executor.type"),
            PrinterColumn("Timeout", "string", ".spec.timeout"),
            AGE,
        ),
    ),
    KindInfo(BackupBlueprint, "backupblueprints", "backupblueprint", columns=(AGE,)),
    KindInfo(
        BackupVerificationSession,
        "backupverificationsession",
        "backupverificationsession",
        columns=(PHASE, DURATION, AGE),
        status_subresource=True,
    ),
    KindInfo(BackupVerifier, "backupverifier", "backupverifier", columns=(AGE,)),
    KindInfo(BackupBatch, "backupbatches", "backupbatch", columns=(AGE,), status_subresource=True),
    KindInfo(Addon, "addons", "addon", scope="Cluster", columns=(AGE,)),
    KindInfo(Function, "functions", "function", scope="Cluster", short_names=("fn",), columns=(AGE,)),
)

_BY_TYPE: dict[tuple[str, str], KindInfo] = {(k.api_version, k.kind): k for k in KINDS}
_BY_MODEL: dict[type[Resource], KindInfo] = {k.model: k for k in KINDS}


def is_kubestash_api_version(api_version: str) -> bool:
    return api_version.split("/", maxsplit=1)[0] in KUBESTASH_GROUPS


def lookup_kind(api_version: str, kind: str) -> KindInfo | None:
    return _BY_TYPE.get((api_version, kind))


def kind_info(model: type[Resource]) -> KindInfo:
    return _BY_MODEL[model]
