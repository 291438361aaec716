"""The resource types the bundled API server serves: built-ins, and whatever CRDs define.

A :class:`ResourceType` carries what discovery, routing, tables and validation
need. Built-in kinds are stored without deep validation (``schema`` is None);
CRD-defined kinds carry their ``openAPIV3Schema``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubestash.api.registry import PrinterColumn

VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    """API group; "" for the core group (``/api/v1``)."""
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    columns: tuple[PrinterColumn, ...] = ()
    schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    """openAPIV3Schema for CRD-defined kinds; None means stored as written."""
    verbs: tuple[str, ...] = VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> str:
        """``plural.group`` (``pods`` for core): the name the store and RBAC use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


def _core(
    kind: str, plural: str, *, namespaced: bool = True, short: tuple[str, ...] = (), all_: bool = False
) -> ResourceType:
    return _grouped("", "v1", kind, plural, namespaced=namespaced, short=short, all_=all_)


def _grouped(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    all_: bool = False,
) -> ResourceType:
    return ResourceType(
        group,
        version,
        kind,
        plural,
        kind.lower(),
        namespaced=namespaced,
        short_names=short,
        categories=("all",) if all_ else (),
        status_subresource=kind in _WITH_STATUS,
    )


_WITH_STATUS = {
    "Namespace",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "CustomResourceDefinition",
    "VolumeSnapshot",
}

BUILTINS: tuple[ResourceType, ...] = (
    _core("Namespace", "namespaces", namespaced=False, short=("ns",)),
    _core("Secret", "secrets"),
    _core("ConfigMap", "configmaps", short=("cm",)),
    _core("ServiceAccount", "serviceaccounts", short=("sa",)),
    _core("Service", "services", short=("svc",), all_=True),
    _core("Event", "events", short=("ev",)),
    _core("PersistentVolume", "persistentvolumes", namespaced=False, short=("pv",)),
    _core("PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",)),
    _core("Pod", "pods", short=("po",), all_=True),
    _grouped("events.k8s.io", "v1", "Event", "events", short=("ev",)),
    _grouped("apps", "v1", "Deployment", "deployments", short=("deploy",), all_=True),
    _grouped("apps", "v1", "StatefulSet", "statefulsets", short=("sts",), all_=True),
    _grouped("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), all_=True),
    _grouped("apps", "v1", "ReplicaSet", "replicasets", short=("rs",), all_=True),
    _grouped("batch", "v1", "Job", "jobs", all_=True),
    _grouped("batch", "v1", "CronJob", "cronjobs", short=("cj",), all_=True),
    _grouped("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _grouped("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _grouped("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _grouped("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False),
    _grouped("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
    _grouped("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", short=("vs",)),
    _grouped(
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
        namespaced=False,
        short=("vsclass",),
    ),
    _grouped(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
    ),
    _grouped("appcatalog.appscode.com", "v1alpha1", "AppBinding", "appbindings"),
)


def from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        columns = tuple(
            PrinterColumn(c["name"], c.get("type", "string"), c["jsonPath"])
            for c in version.get("additionalPrinterColumns") or []
        )
        out.append(
            ResourceType(
                group=spec.get("group", ""),
                version=version["name"],
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or str(names.get("kind", "")).lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                status_subresource="status" in (version.get("subresources") or {}),
                columns=columns,
                schema=((version.get("schema") or {}).get("openAPIV3Schema") or {"type": "object"}),
            )
        )
    return out


class ResourceRegistry:
    """What is served right now; CRDs add and remove entries while the server runs."""

    def __init__(self, types: Iterable[ResourceType] = BUILTINS) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        for rt in types:
            self.add(rt)

    def add(self, rt: ResourceType) -> None:
        self._types[(rt.group, rt.version, rt.plural)] = rt

    def remove(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return next((rt for rt in self._types.values() if rt.api_version == api_version and rt.kind == kind), None)

    def by_key(self, key: str) -> ResourceType | None:
        """The served type stored under ``plural.group`` (first served version)."""
        return next((rt for rt in self._types.values() if rt.key == key), None)

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Group name -> served versions (core group under "")."""
        out: dict[str, list[str]] = {}
        for rt in self._types.values():
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out
