"""Kubernetes types that KubeStash objects embed.

Only the fields our code reads are typed; everything else a user writes in a
volume source, pod template or runtime setting is preserved untouched (see
:class:`~kubestash.api.base.K8sModel`). Free-form places are plain JSON objects.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from kubestash.api.base import K8sModel, KubeModel

FreeForm = dict[str, Any]
"""A JSON object whose content is not ours to check (x-kubernetes-preserve-unknown-fields)."""

IntOrString = int | str


class OwnerReference(K8sModel):
    api_version: str
    kind: str
    name: str
    uid: str
    controller: bool | None = None
    block_owner_deletion: bool | None = None


class ObjectMeta(K8sModel):
    name: str | None = None
    generate_name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    finalizers: list[str] | None = None
    owner_references: list[OwnerReference] | None = None
    managed_fields: list[FreeForm] | None = None


class LabelSelectorRequirement(KubeModel):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None


class LabelSelector(KubeModel):
    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None


class EnvVar(K8sModel):
    name: str
    value: str | None = None
    value_from: FreeForm | None = None


class VolumeMount(K8sModel):
    name: str
    mount_path: str
    read_only: bool | None = None
    sub_path: str | None = None


class Volume(K8sModel):
    """A named volume; its source (hostPath, persistentVolumeClaim, ...) is preserved as written."""

    name: str


class PersistentVolumeClaimTemplate(K8sModel):
    metadata: FreeForm | None = None
    spec: FreeForm | None = None


class JobTemplate(K8sModel):
    """The Job spec a KubeStash scheduler stamps out (batch/v1 JobSpec subset)."""

    parallelism: Annotated[int, Field(ge=0)] | None = None
    completions: Annotated[int, Field(ge=0)] | None = None
    active_deadline_seconds: Annotated[int, Field(ge=1)] | None = None
    backoff_limit: Annotated[int, Field(ge=0)] | None = None
    ttl_seconds_after_finished: Annotated[int, Field(ge=0)] | None = None
    completion_mode: Literal["NonIndexed", "Indexed"] | None = None
    suspend: bool | None = None
    template: FreeForm | None = None
    """Pod template (metadata, controller, spec) for the Job's pods."""
