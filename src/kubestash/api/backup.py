"""core.kubestash.com/v1alpha1 backup kinds: BackupConfiguration, BackupSession, BackupBatch, BackupBlueprint."""

from __future__ import annotations

from typing import ClassVar, Literal

from kubestash.api.base import KubeModel
from kubestash.api.resource import Resource
from kubestash.api.shared import (
    AddonInfo,
    Condition,
    Count,
    GoDuration,
    HookInfo,
    HookStatus,
    ObjectReference,
    ResourceFoundStatus,
    RetryConfig,
    SchedulerSpec,
    Time,
    TypedLocalObjectReference,
    TypedObjectReference,
    UsagePolicy,
)

CORE_GROUP = "core.kubestash.com"
CORE_API_VERSION = f"{CORE_GROUP}/v1alpha1"


class BackendReference(KubeModel):
    name: str = ""
    storage_ref: ObjectReference | None = None
    retention_policy: ObjectReference | None = None


class RepositoryInfo(KubeModel):
    name: str = ""
    backend: str = ""
    """Name of a backend in spec.backends; empty means the default backend."""
    directory: str = ""
    """Directory inside the backend; becomes Repository.spec.path."""
    encryption_secret: ObjectReference | None = None
    deletion_policy: Literal["Delete", "WipeOut", "Retain"] | None = None
    backup_verifier: ObjectReference | None = None


class BackupHooks(KubeModel):
    pre_backup: list[HookInfo] | None = None
    post_backup: list[HookInfo] | None = None


class SessionConfig(KubeModel):
    name: str = ""
    scheduler: SchedulerSpec | None = None
    hooks: BackupHooks | None = None
    retry_config: RetryConfig | None = None
    backup_timeout: GoDuration | None = None
    """Abort the backup after this long, e.g. 30m."""
    session_history_limit: Count = 1
    """How many finished BackupSessions to keep."""


class Session(SessionConfig):
    addon: AddonInfo | None = None
    repositories: list[RepositoryInfo] | None = None


class BackupConfigurationSpec(KubeModel):
    target: TypedObjectReference | None = None
    """What to back up: a workload, a PVC or a database. Omitted for cluster-wide backups."""
    backends: list[BackendReference] | None = None
    sessions: list[Session] | None = None
    paused: bool | None = None


class BackendStorageStatus(KubeModel):
    ref: ObjectReference | None = None
    phase: str | None = None
    reason: str | None = None


class RetentionPolicyApplyStatus(KubeModel):
    ref: ObjectReference | None = None
    found: bool | None = None
    reason: str | None = None


class BackendStatus(KubeModel):
    name: str | None = None
    ready: bool | None = None
    storage: BackendStorageStatus | None = None
    retention_policy: RetentionPolicyApplyStatus | None = None


class RepoStatus(KubeModel):
    name: str | None = None
    phase: Literal["NotReady", "Ready"] | None = None
    reason: str | None = None
    verification_configured: bool | None = None


class ScheduledSessionStatus(KubeModel):
    name: str | None = None
    next_schedule: str | None = None
    conditions: list[Condition] | None = None


InvokerPhase = Literal["NotReady", "Ready", "Invalid"]


class BackupConfigurationStatus(KubeModel):
    backends: list[BackendStatus] | None = None
    repositories: list[RepoStatus] | None = None
    dependencies: list[ResourceFoundStatus] | None = None
    sessions: list[ScheduledSessionStatus] | None = None
    phase: InvokerPhase | None = None
    target_found: bool | None = None
    conditions: list[Condition] | None = None


class BackupConfiguration(Resource):
    """What to back up, where to, and when."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupConfiguration"

    spec: BackupConfigurationSpec
    status: BackupConfigurationStatus | None = None


# ---------------------------------------------------------------- BackupSession


class BackupSessionSpec(KubeModel):
    invoker: TypedLocalObjectReference | None = None
    session: str | None = None
    retry_left: Count | None = None
    backup_timeout: GoDuration | None = None


class SnapshotStatusRef(KubeModel):
    name: str | None = None
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    app_ref: TypedObjectReference | None = None
    repository: str | None = None


class RetentionPolicyStatus(KubeModel):
    ref: ObjectReference | None = None
    repository: str | None = None
    phase: Literal["Pending", "Applied", "FailedToApply"] | None = None
    error: str | None = None


BackupSessionPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]


class BackupSessionStatus(KubeModel):
    phase: BackupSessionPhase | None = None
    duration: str | None = None
    backup_deadline: Time | None = None
    total_snapshots: Count | None = None
    snapshots: list[SnapshotStatusRef] | None = None
    hooks: HookStatus | None = None
    retention_policy: list[RetentionPolicyStatus] | None = None
    retried: bool | None = None
    next_retry: Time | None = None
    conditions: list[Condition] | None = None


class BackupSession(Resource):
    """One run of one session of a BackupConfiguration."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupSession"

    spec: BackupSessionSpec
    status: BackupSessionStatus | None = None


# ------------------------------------------------------------------ BackupBatch


class BatchTarget(KubeModel):
    name: str = ""
    app_ref: TypedObjectReference | None = None


class BatchSessionTarget(KubeModel):
    name: str = ""
    addon: AddonInfo | None = None
    repositories: list[RepositoryInfo] | None = None


class BatchSession(SessionConfig):
    targets: list[BatchSessionTarget] | None = None


class BackupBatchSpec(KubeModel):
    backends: list[BackendReference] | None = None
    targets: list[BatchTarget] | None = None
    sessions: list[BatchSession] | None = None
    paused: bool | None = None


class BackupBatchStatus(KubeModel):
    backends: list[BackendStatus] | None = None
    repositories: list[RepoStatus] | None = None
    dependencies: list[ResourceFoundStatus] | None = None
    sessions: list[ScheduledSessionStatus] | None = None
    targets: list[ResourceFoundStatus] | None = None
    phase: InvokerPhase | None = None
    conditions: list[Condition] | None = None


class BackupBatch(Resource):
    """Several targets backed up together on one schedule."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupBatch"

    spec: BackupBatchSpec
    status: BackupBatchStatus | None = None


# -------------------------------------------------------------- BackupBlueprint


class BackupConfigurationTemplate(KubeModel):
    namespace: str | None = None
    """Namespace of generated BackupConfigurations (default: the blueprint's)."""
    backends: list[BackendReference] | None = None
    sessions: list[Session] | None = None
    deletion_policy: Literal["OnDelete"] | None = None


class ResourceTypeMeta(KubeModel):
    api_version: str | None = None
    kind: str | None = None


class BackupBlueprintSpec(KubeModel):
    usage_policy: UsagePolicy | None = None
    subjects: list[ResourceTypeMeta] | None = None
    backup_configuration_template: BackupConfigurationTemplate | None = None


class BackupBlueprint(Resource):
    """A BackupConfiguration template applied to annotated workloads (auto-backup)."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupBlueprint"

    spec: BackupBlueprintSpec
