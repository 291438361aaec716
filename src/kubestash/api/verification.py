"""core.kubestash.com/v1alpha1 BackupVerifier and BackupVerificationSession."""

from __future__ import annotations

from typing import ClassVar, Literal

from kubestash.api.backup import CORE_API_VERSION
from kubestash.api.base import KubeModel
from kubestash.api.k8s import FreeForm, Volume, VolumeMount
from kubestash.api.resource import Resource
from kubestash.api.shared import (
    AddonInfo,
    Condition,
    Count,
    RetryConfig,
    SchedulerSpec,
    TypedLocalObjectReference,
    TypedObjectReference,
)


class RestoreOption(KubeModel):
    target: TypedObjectReference | None = None
    addon_info: AddonInfo | None = None


class ScriptVerifierSpec(KubeModel):
    location: str | None = None
    args: list[str] | None = None


class BackupVerifierSpec(KubeModel):
    restore_option: RestoreOption | None = None
    scheduler: SchedulerSpec | None = None
    function: str | None = None
    volumes: list[Volume] | None = None
    volume_mounts: list[VolumeMount] | None = None
    type: Literal["RestoreOnly", "Query", "Script"] | None = None
    query: FreeForm | None = None
    """Per-database checks, e.g. mySQL: [{database, table, rowCount: {operator, value}}]."""
    script: ScriptVerifierSpec | None = None
    retry_config: RetryConfig | None = None
    session_history_limit: Count = 1
    runtime_settings: FreeForm | None = None


class BackupVerifier(Resource):
    """How and when to prove that backups restore."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupVerifier"

    spec: BackupVerifierSpec


class BackupVerificationSessionSpec(KubeModel):
    invoker: TypedLocalObjectReference | None = None
    session: str | None = None
    repository: str | None = None
    snapshot: str | None = None
    retry_left: Count | None = None


class BackupVerificationSessionStatus(KubeModel):
    phase: Literal["Running", "Succeeded", "Failed", "Skipped"] | None = None
    duration: str | None = None
    retried: bool | None = None
    conditions: list[Condition] | None = None


class BackupVerificationSession(Resource):
    """One verification run of a repository's latest snapshot."""

    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "BackupVerificationSession"

    spec: BackupVerificationSessionSpec
    status: BackupVerificationSessionStatus | None = None
