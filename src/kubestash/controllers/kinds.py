"""lightkube resource classes for KubeStash's kinds, generated from the registry."""

from __future__ import annotations

from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource

from kubestash.api.registry import KINDS, KindInfo

_CLASSES: dict[str, type[NamespacedResource]] = {}


def resource_class(info: KindInfo) -> type[NamespacedResource]:
    if info.kind not in _CLASSES:
        make = create_namespaced_resource if info.namespaced else create_global_resource
        _CLASSES[info.kind] = make(info.group, info.version, info.kind, info.plural)  # type: ignore[assignment]
    return _CLASSES[info.kind]


def by_kind(kind: str) -> type[NamespacedResource]:
    return resource_class(next(info for info in KINDS if info.kind == kind))
