"""Types shared by several KubeStash kinds (references, conditions, usage policy, addons, hooks)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema

from kubestash.api.base import K8sModel, KubeModel
from kubestash.api.durations import parse_go_duration
from kubestash.api.k8s import (
    EnvVar,
    FreeForm,
    IntOrString,
    JobTemplate,
    LabelSelector,
    PersistentVolumeClaimTemplate,
    Volume,
    VolumeMount,
)


def _check_go_duration(value: str) -> str:
    parse_go_duration(value)
    return value


def _check_time(value: str) -> str:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an RFC 3339 time such as 2026-11-20T10:00:00Z") from None
    return value


GoDuration = Annotated[str, AfterValidator(_check_go_duration)]
"""A Go duration string such as ``30s``, ``5m`` or ``1h30m``."""

Time = Annotated[str, AfterValidator(_check_time), WithJsonSchema({"type": "string", "format": "date-time"})]
"""An RFC 3339 timestamp."""

Count = Annotated[int, Field(ge=0)]

Driver = Literal["Restic", "WalG", "VolumeSnapshotter", "Solr", "Medusa", "ClickHouseBackup", "Neo4jAdmin"]
ConditionStatus = Literal["True", "False", "Unknown"]
DeletionPolicy = Literal["Delete", "WipeOut"]
HookPhase = Literal["Succeeded", "Failed", "Pending"]


class ObjectReference(KubeModel):
    """A reference by name; a missing namespace means the referring object's namespace."""

    namespace: str | None = None
    name: str


class TypedObjectReference(KubeModel):
    api_group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str


class TypedLocalObjectReference(KubeModel):
    api_group: str | None = None
    kind: str
    name: str


class Condition(KubeModel):
    type: str
    status: ConditionStatus
    observed_generation: int | None = None
    severity: str | None = None
    last_transition_time: Time
    reason: str | None = None
    message: str | None = None


class AllowedNamespaces(KubeModel):
    from_: Literal["All", "Selector", "Same"] = Field(default="Same", alias="from")
    """Which namespaces may use this object: All, Selector (matching `selector`) or Same."""
    selector: LabelSelector | None = None


class UsagePolicy(KubeModel):
    """Which namespaces may refer to this object (defaults to the same namespace only)."""

    allowed_namespaces: AllowedNamespaces = Field(default_factory=AllowedNamespaces)


class ParameterDefinition(KubeModel):
    name: str | None = None
    usage: str | None = None
    required: bool | None = None
    default: str | None = None


class ResourceFoundStatus(KubeModel):
    api_group: str | None = None
    kind: str | None = None
    namespace: str | None = None
    name: str
    found: bool | None = None


class RetryConfig(KubeModel):
    max_retry: Annotated[int, Field(ge=1)] = 1
    """How many times a failed session is retried (at least 1)."""
    delay: GoDuration | None = None
    """Wait before a retry, e.g. 1m; empty retries at once."""


class SchedulerSpec(KubeModel):
    """When a session runs: a CronJob-like schedule."""

    schedule: str
    """Cron schedule (5 fields, or @hourly/@daily/@weekly/@monthly/@yearly/@every <duration>)."""
    starting_deadline_seconds: Count | None = None
    concurrency_policy: str | None = None
    """Allow (default), Forbid or Replace."""
    suspend: bool | None = None
    job_template: JobTemplate | None = None
    successful_jobs_history_limit: Count | None = None
    failed_jobs_history_limit: Count | None = None


class TargetVolumeInfo(KubeModel):
    volumes: list[Volume] | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_claim_templates: list[FreeForm] | None = None


class AddonVolumeInfo(KubeModel):
    name: str
    source: FreeForm | None = None


class TaskReference(KubeModel):
    name: str = ""
    """Name of the task in the Addon (e.g. logical-backup)."""
    variables: list[EnvVar] | None = None
    params: FreeForm | None = None
    """Task parameters; string values fill the Function's ${...} arguments."""
    target_volumes: TargetVolumeInfo | None = None
    addon_volumes: list[AddonVolumeInfo] | None = None


class AddonInfo(KubeModel):
    name: str = ""
    """Name of the Addon that performs the tasks."""
    tasks: list[TaskReference] | None = None
    container_runtime_settings: FreeForm | None = None
    job_template: FreeForm | None = None


class HookInfo(KubeModel):
    name: str | None = None
    hook_template: ObjectReference | None = None
    params: FreeForm | None = None
    max_retry: Count | None = None
    timeout: GoDuration | None = None
    execution_policy: Literal["Always", "OnSuccess", "OnFailure"] = "Always"
    variables: list[EnvVar] | None = None
    volumes: list[Volume] | None = None
    volume_mounts: list[VolumeMount] | None = None
    runtime_settings: FreeForm | None = None


class HookExecutionStatus(KubeModel):
    name: str | None = None
    phase: HookPhase | None = None


class HookStatus(KubeModel):
    pre_hooks: list[HookExecutionStatus] | None = None
    post_hooks: list[HookExecutionStatus] | None = None


class VolumeSource(K8sModel):
    """A Kubernetes volume source, plus a template for a PVC KubeStash creates."""

    volume_claim_template: PersistentVolumeClaimTemplate | None = None


__all__ = [
    "AddonInfo",
    "AddonVolumeInfo",
    "AllowedNamespaces",
    "Condition",
    "ConditionStatus",
    "Count",
    "DeletionPolicy",
    "Driver",
    "GoDuration",
    "HookExecutionStatus",
    "HookInfo",
    "HookPhase",
    "HookStatus",
    "IntOrString",
    "ObjectReference",
    "ParameterDefinition",
    "ResourceFoundStatus",
    "RetryConfig",
    "SchedulerSpec",
    "TargetVolumeInfo",
    "TaskReference",
    "Time",
    "TypedLocalObjectReference",
    "TypedObjectReference",
    "UsagePolicy",
    "VolumeSource",
]
