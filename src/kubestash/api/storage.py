"""storage.kubestash.com/v1alpha1: BackupStorage, Repository, RetentionPolicy, Snapshot."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kubestash.api.base import K8sModel, KubeModel
from kubestash.api.k8s import FreeForm
from kubestash.api.resource import Resource
from kubestash.api.shared import (
    Condition,
    Count,
    DeletionPolicy,
    Driver,
    ObjectReference,
    Time,
    TypedObjectReference,
    UsagePolicy,
)

STORAGE_GROUP = "storage.kubestash.com"
STORAGE_API_VERSION = f"{STORAGE_GROUP}/v1alpha1"

Provider = Literal["local", "s3", "gcs", "azure"]
PROVIDERS: tuple[Provider, ...] = ("local", "s3", "gcs", "azure")

# ---------------------------------------------------------------- BackupStorage


class LocalSpec(K8sModel):
    """A Kubernetes volume (hostPath, nfs, persistentVolumeClaim, ...) mounted at mountPath."""

    mount_path: str | None = None
    """Where the volume is mounted inside backup/restore jobs."""
    sub_path: str | None = None
    max_connections: Count | None = None


class S3Spec(KubeModel):
    endpoint: str | None = None
    """S3 server URL, e.g. https://s3.us-west-1.amazonaws.com or a MinIO URL."""
    bucket: str | None = None
    prefix: str | None = None
    region: str | None = None
    secret_name: str | None = None
    """Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and optional CA_CERT_DATA); empty for pod identity."""
    max_connections: Count | None = None
    insecure_tls: bool | None = Field(default=None, alias="insecureTLS")


class GCSSpec(KubeModel):
    bucket: str | None = None
    prefix: str | None = None
    max_connections: Count | None = None
    secret_name: str | None = None
    """Secret with GOOGLE_PROJECT_ID and GOOGLE_SERVICE_ACCOUNT_JSON_KEY."""


class AzureSpec(KubeModel):
    storage_account: str | None = None
    container: str | None = None
    prefix: str | None = None
    max_connections: Count | None = None
    secret_name: str | None = None
    """Secret with AZURE_ACCOUNT_KEY; empty for workload identity."""


class Backend(KubeModel):
    provider: str | None = None
    """One of local, s3, gcs, azure; the matching section must be set."""
    local: LocalSpec | None = None
    s3: S3Spec | None = None
    gcs: GCSSpec | None = None
    azure: AzureSpec | None = None


class BackupStorageSpec(KubeModel):
    storage: Backend
    usage_policy: UsagePolicy | None = None
    default: bool | None = None
    """Use this storage when a BackupConfiguration names none (one default per namespace)."""
    deletion_policy: DeletionPolicy = "Delete"
    """Delete removes Repository and Snapshot objects; WipeOut also deletes the backed-up data."""
    runtime_settings: FreeForm | None = None


class RepositoryInfo(KubeModel):
    name: str | None = None
    namespace: str | None = None
    path: str | None = None
    size: str | None = None
    synced: bool | None = None
    error: str | None = None


class BackupStorageStatus(KubeModel):
    phase: Literal["Ready", "NotReady"] | None = None
    total_size: str | None = None
    repositories: list[RepositoryInfo] | None = None
    conditions: list[Condition] | None = None


class BackupStorage(Resource):
    """Where backups are kept: a bucket or a volume."""

    API_VERSION: ClassVar[str] = STORAGE_API_VERSION
    KIND: ClassVar[str] = "BackupStorage"

    spec: BackupStorageSpec
    status: BackupStorageStatus | None = None


# ------------------------------------------------------------------- Repository


class RepositorySpec(KubeModel):
    app_ref: TypedObjectReference | None = None
    storage_ref: ObjectReference | None = None
    path: str | None = None
    """Directory inside the BackupStorage; unique per storage."""
    deletion_policy: DeletionPolicy = "Delete"
    encryption_secret: ObjectReference | None = None
    """Secret holding RESTIC_PASSWORD."""
    paused: bool | None = None


class SnapshotInfo(KubeModel):
    name: str | None = None
    phase: Literal["Pending", "Running", "Succeeded", "Failed"] | None = None
    session: str | None = None
    size: str | None = None
    snapshot_time: Time | None = None


class RepositoryStatus(KubeModel):
    phase: Literal["NotReady", "Ready"] | None = None
    last_backup_time: Time | None = None
    integrity: bool | None = None
    snapshot_count: Count | None = None
    size: str | None = None
    recent_snapshots: list[SnapshotInfo] | None = None
    conditions: list[Condition] | None = None
    component_paths: list[str] | None = None


class Repository(Resource):
    """One backed-up application's directory in a BackupStorage."""

    API_VERSION: ClassVar[str] = STORAGE_API_VERSION
    KIND: ClassVar[str] = "Repository"

    spec: RepositorySpec
    status: RepositoryStatus | None = None


# -------------------------------------------------------------- RetentionPolicy


class SuccessfulSnapshotsKeepPolicy(KubeModel):
    last: Count | None = None
    hourly: Count | None = None
    daily: Count | None = None
    weekly: Count | None = None
    monthly: Count | None = None
    yearly: Count | None = None


class FailedSnapshotsKeepPolicy(KubeModel):
    last: Count = 1


class RetentionPolicySpec(KubeModel):
    max_retention_period: str | None = None
    """Remove snapshots older than this, e.g. 2mo or 1y2mo3w4d5h6m (month = 30 days)."""
    usage_policy: UsagePolicy | None = None
    successful_snapshots: SuccessfulSnapshotsKeepPolicy | None = None
    failed_snapshots: FailedSnapshotsKeepPolicy | None = None
    default: bool | None = None


class RetentionPolicy(Resource):
    """Which snapshots to keep."""

    API_VERSION: ClassVar[str] = STORAGE_API_VERSION
    KIND: ClassVar[str] = "RetentionPolicy"

    spec: RetentionPolicySpec


# --------------------------------------------------------------------- Snapshot


class ResticSummary(KubeModel):
    id: str | None = None
    uploaded: str | None = None
    host_path: str | None = None
    size: str | None = None
    start_time: Time | None = None
    end_time: Time | None = None


class BackupProgress(KubeModel):
    seconds_elapsed: int | None = None
    percent_done: str | None = None
    total_files: int | None = None
    files_done: int | None = None
    backup_done: str | None = None
    total: str | None = None
    speed: str | None = None


class ResticStats(KubeModel):
    summary: ResticSummary | None = None
    progress: BackupProgress | None = None


class VolumeSnapshotterStats(KubeModel):
    pvc_name: str | None = None
    host_path: str | None = None
    volume_snapshot_name: str | None = None
    volume_snapshot_time: Time | None = None


class WalGStats(KubeModel):
    id: str | None = None
    databases: list[str] | None = None
    start_time: Time | None = None
    stop_time: Time | None = None


class MedusaStats(KubeModel):
    backup_name: str | None = None
    backup_nodes: list[str] | None = None
    start_time: str | None = None
    finish_time: str | None = None
    status: str | None = None


class SolrStats(KubeModel):
    backup_id: int | None = None
    backup_name: str | None = None
    collection: str | None = None
    index_file_count: int | None = None
    index_size_mb: float | None = Field(default=None, alias="indexSizeMB")
    location: str | None = None
    start_time: str | None = None
    uploaded_index_file_mb: float | None = Field(default=None, alias="uploadedIndexFileMB")


class ClickHouseStats(KubeModel):
    id: str | None = None
    host: str | None = None
    status: str | None = None
    start_time: Time | None = None
    finish_time: Time | None = None


class Neo4jStats(KubeModel):
    compressed: bool | None = None
    database: str | None = None
    database_id: str | None = Field(default=None, alias="databaseID")
    file: str | None = None
    full: bool | None = None
    highest_tx: int | None = Field(default=None, alias="highestTX")
    lowest_tx: int | None = Field(default=None, alias="lowestTX")
    recovered: bool | None = None
    store_id_hash: str | None = Field(default=None, alias="storeIDHash")
    time: str | None = None


class LogStatsEntry(KubeModel):
    start: str | None = None
    end: str | None = None
    error: str | None = None


class LogRetentionStats(KubeModel):
    deleted_log_count: int | None = None
    error: str | None = None
    last_execution_time: str | None = None
    retention_period_applied: str | None = None


class LogStats(KubeModel):
    start: str | None = None
    end: str | None = None
    lsn: str | None = None
    total_succeeded_count: int | None = None
    total_failed_count: int | None = None
    last_succeeded_stats: list[LogStatsEntry] | None = None
    last_failed_stats: list[LogStatsEntry] | None = None
    last_log_retention_stats: list[LogRetentionStats] | None = None


ComponentPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class Component(KubeModel):
    path: str | None = None
    """Restic repository of this component, relative to the repository path."""
    phase: ComponentPhase | None = None
    size: str | None = None
    duration: str | None = None
    integrity: bool | None = None
    error: str | None = None
    driver: Driver | None = None
    restic_stats: list[ResticStats] | None = None
    volume_snapshotter_stats: list[VolumeSnapshotterStats] | None = None
    wal_g_stats: WalGStats | None = Field(default=None, alias="walGStats")
    medusa_stats: MedusaStats | None = None
    solr_stats: list[SolrStats] | None = None
    click_house_stats: list[ClickHouseStats] | None = None
    neo4j_stats: list[Neo4jStats] | None = None
    log_stats: LogStats | None = None


class SnapshotSpec(KubeModel):
    snapshot_id: str | None = Field(default=None, alias="snapshotID")
    type: Literal["FullBackup", "IncrementalBackup"] | None = None
    repository: str | None = None
    session: str | None = None
    backup_session: str | None = None
    version: str | None = None
    app_ref: TypedObjectReference | None = None
    deletion_policy: DeletionPolicy = "Delete"
    paused: bool | None = None


class SnapshotStatus(KubeModel):
    phase: ComponentPhase | None = None
    verification_status: Literal["Verified", "NotVerified", "VerificationFailed"] | None = None
    verification_session: str | None = None
    snapshot_time: Time | None = None
    last_update_time: Time | None = None
    size: str | None = None
    integrity: bool | None = None
    conditions: list[Condition] | None = None
    total_components: Count | None = None
    components: dict[str, Component] | None = None


class Snapshot(Resource):
    """One backup of one repository: its components live in restic repositories."""

    API_VERSION: ClassVar[str] = STORAGE_API_VERSION
    KIND: ClassVar[str] = "Snapshot"

    spec: SnapshotSpec
    status: SnapshotStatus | None = None


__all__ = [
    "PROVIDERS",
    "STORAGE_API_VERSION",
    "STORAGE_GROUP",
    "AzureSpec",
    "Backend",
    "BackupStorage",
    "BackupStorageSpec",
    "BackupStorageStatus",
    "Component",
    "FailedSnapshotsKeepPolicy",
    "GCSSpec",
    "LocalSpec",
    "Provider",
    "Repository",
    "RepositorySpec",
    "RepositoryStatus",
    "RetentionPolicy",
    "RetentionPolicySpec",
    "S3Spec",
    "Snapshot",
    "SnapshotSpec",
    "SnapshotStatus",
    "SuccessfulSnapshotsKeepPolicy",
]
