"""addons.kubestash.com/v1alpha1 Addon and Function (cluster-scoped): what a backup task runs."""

from __future__ import annotations

from typing import ClassVar, Literal

from kubestash.api.base import KubeModel
from kubestash.api.k8s import FreeForm, VolumeMount
from kubestash.api.resource import Resource
from kubestash.api.shared import ParameterDefinition, VolumeSource

ADDONS_GROUP = "addons.kubestash.com"
ADDONS_API_VERSION = f"{ADDONS_GROUP}/v1alpha1"


class VolumeTemplate(KubeModel):
    name: str | None = None
    usage: str | None = None
    source: VolumeSource | None = None


class Task(KubeModel):
    name: str | None = None
    function: str | None = None
    """Name of the Function that runs this task."""
    driver: str | None = None
    executor: Literal["Job", "Sidecar", "EphemeralContainer", "MultiLevelJob"] | None = None
    singleton: bool | None = None
    """One job for the whole target (true) or one per pod/replica (false)."""
    parameters: list[ParameterDefinition] | None = None
    volume_template: list[VolumeTemplate] | None = None
    volume_mounts: list[VolumeMount] | None = None


class AddonSpec(KubeModel):
    backup_tasks: list[Task] | None = None
    restore_tasks: list[Task] | None = None


class Addon(Resource):
    """The backup and restore tasks available for one kind of target."""

    API_VERSION: ClassVar[str] = ADDONS_API_VERSION
    KIND: ClassVar[str] = "Addon"

    spec: AddonSpec


class FunctionSpec(KubeModel):
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    """Arguments; ${var:=default} is replaced from task params and built-in variables."""
    working_dir: str | None = None
    ports: list[FreeForm] | None = None
    volume_mounts: list[VolumeMount] | None = None
    volume_devices: list[FreeForm] | None = None
    runtime_settings: FreeForm | None = None
    available_versions: list[str] | None = None


class Function(Resource):
    """A container (image + args) that performs a task."""

    API_VERSION: ClassVar[str] = ADDONS_API_VERSION
    KIND: ClassVar[str] = "Function"

    spec: FunctionSpec
