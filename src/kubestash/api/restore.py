"""core.kubestash.com/v1alpha1 RestoreSession."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from kubestash.api.backup import CORE_API_VERSION
from kubestash.api.base import KubeModel
from kubestash.api.k8s import FreeForm
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
    Time,
    TypedObjectReference,
)


class PITR(KubeModel):
    """Point-in-time recovery: restore the newest snapshot taken at or before targetTime."""

    target_time: Time | None = None
    exclusive: bool | None = None
    """If true, a snapshot taken exactly at targetTime is not eligible."""


class RestoreDataSource(KubeModel):
    namespace: str | None = None
    """Namespace of the Repository and Snapshot (default: the RestoreSession's)."""
    repository: str | None = None
    snapshot: str | None = None
    """Snapshot name, or `latest` for the newest successful snapshot of the repository."""
    pitr: PITR | None = None
    components: list[str] | None = None
    """Restore only these components (default: all)."""
    encryption_secret: ObjectReference | None = None


class RestoreHooks(KubeModel):
    pre_restore: list[HookInfo] | None = None
    post_restore: list[HookInfo] | None = None


class WorkloadManifestOptions(KubeModel):
    restore_namespace: str | None = None


class ManifestRestoreOptions(KubeModel):
    """Where and how manifests are restored; database kinds are KubeDB's and kept as written."""

    workload: WorkloadManifestOptions | None = None
    mongo_db: FreeForm | None = Field(default=None, alias="mongoDB")
    postgres: FreeForm | None = None
    my_sql: FreeForm | None = Field(default=None, alias="mySQL")
    maria_db: FreeForm | None = Field(default=None, alias="mariaDB")
    zoo_keeper: FreeForm | None = Field(default=None, alias="zooKeeper")
    singlestore: FreeForm | None = None
    redis: FreeForm | None = None
    clickhouse: FreeForm | None = None
    ms_sql_server: FreeForm | None = Field(default=None, alias="msSQLServer")
    druid: FreeForm | None = None
    redis_sentinel: FreeForm | None = None


class RestoreSessionSpec(KubeModel):
    target: TypedObjectReference | None = None
    data_source: RestoreDataSource | None = None
    addon: AddonInfo | None = None
    hooks: RestoreHooks | None = None
    restore_timeout: GoDuration | None = None
    manifest_options: ManifestRestoreOptions | None = None


RestorePhase = Literal["Pending", "Running", "Failed", "Succeeded", "Invalid", "Unknown"]


class RestoreProgress(KubeModel):
    seconds_elapsed: int | None = None
    percent_done: str | None = None
    total_files: int | None = None
    files_done: int | None = None
    restore_done: str | None = None
    total: str | None = None
    speed: str | None = None


class ComponentRestoreStatus(KubeModel):
    phase: RestorePhase | None = None
    progress: RestoreProgress | None = None
    duration: str | None = None
    error: str | None = None


class RestoreSessionStatus(KubeModel):
    phase: RestorePhase | None = None
    target_found: bool | None = None
    duration: str | None = None
    restore_deadline: Time | None = None
    total_components: Count | None = None
    components: dict[str, ComponentRestoreStatus] | None = None
    hooks: HookStatus | None = None
    dependencies: list[ResourceFoundStatus] | None = None
    paused_backups: list[TypedObjectReference] | None = None
    conditions: list[Condition] | None = None


class RestoreSession(Resource):
    """Restore a snapshot (or a point in time) into a target."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "RestoreSession"

    spec: RestoreSessionSpec
    status: RestoreSessionStatus | None = None
