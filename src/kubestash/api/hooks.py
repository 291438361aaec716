"""core.kubestash.com/v1alpha1 HookTemplate: an action run before or after a backup/restore."""

from __future__ import annotations

from typing import ClassVar, Literal

from kubestash.api.backup import CORE_API_VERSION
from kubestash.api.base import KubeModel
from kubestash.api.k8s import EnvVar, IntOrString, OwnerReference, Volume, VolumeMount
from kubestash.api.resource import Resource
from kubestash.api.shared import ParameterDefinition, UsagePolicy


class ExecAction(KubeModel):
    command: list[str] | None = None


class HTTPHeader(KubeModel):
    name: str
    value: str


class HTTPGetAction(KubeModel):
    host: str | None = None
    port: IntOrString
    path: str | None = None
    scheme: str | None = None
    http_headers: list[HTTPHeader] | None = None


class FormEntry(KubeModel):
    key: str | None = None
    values: list[str] | None = None


class HTTPPostAction(HTTPGetAction):
    body: str | None = None
    """Go template rendered with the session summary (.Name, .Namespace, .Target, .Status ...)."""
    form: list[FormEntry] | None = None


class TCPSocketAction(KubeModel):
    host: str | None = None
    port: IntOrString


class HookAction(KubeModel):
    """Exactly one of exec, httpGet, httpPost, tcpSocket."""

    exec: ExecAction | None = None
    http_get: HTTPGetAction | None = None
    http_post: HTTPPostAction | None = None
    tcp_socket: TCPSocketAction | None = None
    container_name: str | None = None


class FunctionHookExecutorSpec(KubeModel):
    name: str | None = None
    env: list[EnvVar] | None = None
    volume_mounts: list[VolumeMount] | None = None
    volumes: list[Volume] | None = None


class PodHookExecutorSpec(KubeModel):
    selector: str | None = None
    """Label selector of the pods to run in, as `k1=v1,k2=v2`."""
    owner: OwnerReference | None = None
    strategy: Literal["ExecuteOnOne", "ExecuteOnAll"] = "ExecuteOnOne"


class HookExecutor(KubeModel):
    type: Literal["Function", "Pod", "Operator"] | None = None
    function: FunctionHookExecutorSpec | None = None
    pod: PodHookExecutorSpec | None = None


class HookTemplateSpec(KubeModel):
    usage_policy: UsagePolicy | None = None
    params: list[ParameterDefinition] | None = None
    action: HookAction | None = None
    executor: HookExecutor | None = None


class HookTemplate(Resource):
    API_VERSION: ClassVar[str] = CORE_API_VERSION
    KIND: ClassVar[str] = "HookTemplate"

    spec: HookTemplateSpec
