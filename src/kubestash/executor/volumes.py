"""Which components a backup target has, and which directories on this machine its volumes are.

In a cluster a backup Job mounts the target's volumes; embedded mode has no pods, so the executor follows
each volume to the directory behind it instead: a PersistentVolumeClaim to its bound PersistentVolume's
``hostPath``/``local`` path, a ``hostPath`` volume to its own path. Sources without a directory here
(``emptyDir``, ``configMap``, a PV on NFS or CSI, a PVC that is missing or unbound ...) are recorded with the
reason, so that backing up a path under one of them fails with that reason instead of silently saving nothing.

Component names follow KubeStash: Deployment ``dump``; StatefulSet ``dump-pod-<ordinal>``; DaemonSet
``dump-<node>``; a standalone PVC ``dump`` with its volume at ``/kubestash-data``.

The mapping itself is pure (objects as dicts in, dataclasses out); :func:`resolve_target` only fetches.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim

from kubestash.controllers.common import get_or_none

COMPONENT_DUMP = "dump"
PVC_MOUNT_PATH = "/kubestash-data"
"""Where pvc-addon mounts a standalone PVC (``kubestash-data-volume``)."""
PVC_VOLUME = "kubestash-data-volume"
EMBEDDED_NODE = "localhost"
"""Embedded mode is one machine, so a DaemonSet has one pod, on this node."""
PVC_NAME = "PVC_NAME"
POD_ORDINAL = "POD_ORDINAL"

Obj = Mapping[str, Any]


class VolumeError(Exception):
    """A target or volume that cannot be backed up on this machine; the message says which and why."""


class TargetRef(Protocol):
    """What a BackupConfiguration's ``spec.target`` gives (``TypedObjectReference``)."""

    @property
    def api_group(self) -> str | None: ...
    @property
    def kind(self) -> str | None: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Mount:
    """A volume mounted at ``mount_path`` in the (would-be) pod, and the directory it is here."""

    mount_path: str
    host_path: Path
    volume: str
    read_only: bool = False


@dataclass(frozen=True)
class UnmappedMount:
    """A mounted volume with no directory on this machine; ``reason`` is shown if a path under it is asked for."""

    mount_path: str
    volume: str
    reason: str


@dataclass(frozen=True)
class ComponentVolumes:
    name: str
    mounts: tuple[Mount, ...]
    variables: Mapping[str, str] = field(default_factory=dict)
    """``PVC_NAME`` (standalone PVC) or ``POD_ORDINAL`` (StatefulSet), as KubeStash's jobs get them."""
    unmapped: tuple[UnmappedMount, ...] = ()


ClaimPaths = Mapping[str, Path | VolumeError]
"""PVC name -> its directory here, or why there is none."""


# ------------------------------------------------------------------ PersistentVolumes and claims
def bound_volume(pvc: Obj) -> str:
    """The PV a PVC is bound to (``spec.volumeName``)."""
    meta = pvc.get("metadata") or {}
    name = (pvc.get("spec") or {}).get("volumeName")
    if not name:
        phase = (pvc.get("status") or {}).get("phase") or "Pending"
        raise VolumeError(
            f"PersistentVolumeClaim {meta.get('namespace')}/{meta.get('name')} is not bound to a PersistentVolume "
            f"(phase {phase}); in embedded mode create a hostPath or local PersistentVolume and set "
            "spec.volumeName"
        )
    return str(name)


def pv_host_path(pv: Obj) -> Path:
    """The directory of a ``hostPath`` or ``local`` PersistentVolume; other sources have none here."""
    spec = pv.get("spec") or {}
    name = (pv.get("metadata") or {}).get("name")
    for source in ("hostPath", "local"):
        path = (spec.get(source) or {}).get("path")
        if path:
            return Path(path)
    sources = [key for key in spec if key not in _PV_NON_SOURCES]
    what = f"a {sources[0]} source" if sources else "no volume source"
    raise VolumeError(
        f"PersistentVolume {name} has {what}, which has no directory on this machine; "
        "embedded mode can only back up hostPath and local PersistentVolumes"
    )


_PV_NON_SOURCES = frozenset(
    {
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    }
)


def claim_path(pvc: Obj | None, pv: Obj | None, namespace: str, claim: str) -> Path:
    """The directory of PVC ``claim`` given the fetched PVC and PV (None: not found)."""
    if pvc is None:
        raise VolumeError(f"PersistentVolumeClaim {namespace}/{claim} not found")
    volume = bound_volume(pvc)
    if pv is None:
        raise VolumeError(f"PersistentVolume {volume}, bound to PersistentVolumeClaim {namespace}/{claim}, not found")
    return pv_host_path(pv)


# ------------------------------------------------------------------ workloads
def _pod_spec(workload: Obj) -> Obj:
    return ((workload.get("spec") or {}).get("template") or {}).get("spec") or {}


def _claim_templates(statefulset: Obj) -> list[str]:
    templates = (statefulset.get("spec") or {}).get("volumeClaimTemplates") or []
    return [str((t.get("metadata") or {}).get("name")) for t in templates if (t.get("metadata") or {}).get("name")]


def _replicas(workload: Obj) -> int:
    replicas = (workload.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _claim_per_ordinal(template: str, statefulset: str, ordinal: int) -> str:
    return f"{template}-{statefulset}-{ordinal}"


def needed_claims(kind: str, workload: Obj) -> list[str]:
    """Every PVC the components of this workload mount, to be fetched before :func:`components`."""
    name = (workload.get("metadata") or {}).get("name")
    claims = [
        str(v["persistentVolumeClaim"]["claimName"])
        for v in _pod_spec(workload).get("volumes") or []
        if (v.get("persistentVolumeClaim") or {}).get("claimName")
    ]
    if kind == "StatefulSet":
        claims += [
            _claim_per_ordinal(t, str(name), i) for i in range(_replicas(workload)) for t in _claim_templates(workload)
        ]
    return list(dict.fromkeys(claims))


def _source(volume: Obj) -> str:
    return next((key for key in volume if key != "name"), "unknown")


def _mounts(
    pod_spec: Obj, claims: ClaimPaths, claim_for: Callable[[Obj], str | None]
) -> tuple[tuple[Mount, ...], tuple[UnmappedMount, ...]]:
    """Each container's volumeMounts (first one wins for a mount path), resolved through ``claims``."""
    volumes = {str(v.get("name")): v for v in pod_spec.get("volumes") or []}
    mapped: dict[str, Mount] = {}
    unmapped: dict[str, UnmappedMount] = {}
    for container in pod_spec.get("containers") or []:
        for vm in container.get("volumeMounts") or []:
            if not str(vm.get("mountPath") or "").startswith("/"):
                continue
            mount_path = posixpath.normpath(str(vm["mountPath"]))
            if mount_path in mapped or mount_path in unmapped:
                continue
            name = str(vm.get("name"))
            volume = volumes.get(name, {"name": name})
            base = _volume_dir(volume, claims, claim_for)
            if isinstance(base, str):
                unmapped[mount_path] = UnmappedMount(mount_path, name, base)
                continue
            sub_path = vm.get("subPath") or ""
            host = base / sub_path if sub_path else base
            read_only = bool(vm.get("readOnly")) or bool((volume.get("persistentVolumeClaim") or {}).get("readOnly"))
            mapped[mount_path] = Mount(mount_path, host, name, read_only)
    return tuple(mapped.values()), tuple(unmapped.values())


def _volume_dir(volume: Obj, claims: ClaimPaths, claim_for: Callable[[Obj], str | None]) -> Path | str:
    """The directory behind a pod volume, or the reason there is none."""
    name = volume.get("name")
    claim = claim_for(volume)
    if claim is not None:
        found = claims.get(claim)
        if found is None:
            return f"PersistentVolumeClaim {claim} was not looked up"
        return str(found) if isinstance(found, VolumeError) else found
    host = (volume.get("hostPath") or {}).get("path")
    if host:
        return Path(host)
    source = _source(volume)
    if source == "unknown":
        return f"volume {name} is mounted but not defined in the pod template"
    return f"volume {name} is a {source} volume, which has no data on this machine to back up"


def _plain_claim(volume: Obj) -> str | None:
    claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
    return str(claim) if claim else None


def components(kind: str, workload: Obj, claims: ClaimPaths) -> list[ComponentVolumes]:
    """The components of a Deployment, StatefulSet or DaemonSet with their mounts."""
    pod_spec = _pod_spec(workload)
    if kind == "Deployment":
        mounts, unmapped = _mounts(pod_spec, claims, _plain_claim)
        return [ComponentVolumes(COMPONENT_DUMP, mounts, {}, unmapped)]
    if kind == "DaemonSet":
        mounts, unmapped = _mounts(pod_spec, claims, _plain_claim)
        return [ComponentVolumes(f"{COMPONENT_DUMP}-{EMBEDDED_NODE}", mounts, {}, unmapped)]
    if kind == "StatefulSet":
        name = str((workload.get("metadata") or {}).get("name"))
        templates = set(_claim_templates(workload))
        # A claim template shadows a pod volume of the same name, as in Kubernetes.
        volumes = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in templates]
        volumes += [{"name": t, "persistentVolumeClaim": {"claimName": t}} for t in sorted(templates)]
        spec = {**pod_spec, "volumes": volumes}
        out = []
        for ordinal in range(_replicas(workload)):

            def claim_for(volume: Obj, ordinal: int = ordinal) -> str | None:
                claim = _plain_claim(volume)
                if claim is not None and volume.get("name") in templates:
                    return _claim_per_ordinal(claim, name, ordinal)
                return claim

            mounts, unmapped = _mounts(spec, claims, claim_for)
            out.append(
                ComponentVolumes(f"{COMPONENT_DUMP}-pod-{ordinal}", mounts, {POD_ORDINAL: str(ordinal)}, unmapped)
            )
        return out
    raise VolumeError(f"cannot back up a {kind}: supported targets are Deployment, StatefulSet, DaemonSet, PVC")


def pvc_component(claim: str, host_path: Path) -> ComponentVolumes:
    """A standalone PVC: pvc-addon mounts it at ``/kubestash-data``."""
    mount = Mount(PVC_MOUNT_PATH, host_path, PVC_VOLUME, False)
    return ComponentVolumes(COMPONENT_DUMP, (mount,), {PVC_NAME: claim})


# ------------------------------------------------------------------ paths
def _under(path: str, mount_path: str) -> bool:
    return mount_path in ("/", path) or path.startswith(mount_path + "/")


def host_path(component: ComponentVolumes, path: str, *, must_exist: bool = True) -> Path:
    """One container path as a directory here, through the longest mount path containing it.

    A restore passes ``must_exist=False``: it may create the path, but only inside a mounted volume."""
    if not path.startswith("/"):
        raise VolumeError(f"path {path!r} of component {component.name} is not absolute")
    clean = posixpath.normpath(path)
    candidates: list[Mount | UnmappedMount] = [*component.mounts, *component.unmapped]
    matching = [m for m in candidates if _under(clean, m.mount_path)]
    if not matching:
        mounts = ", ".join(f"{m.mount_path} ({m.volume})" for m in candidates) or "none"
        raise VolumeError(
            f"path {path} is not under any volume mounted by component {component.name}; mounts: {mounts}"
        )
    best = max(matching, key=lambda m: len(m.mount_path))
    if isinstance(best, UnmappedMount):
        raise VolumeError(f"path {path} of component {component.name} is on volume {best.volume}: {best.reason}")
    rest = posixpath.relpath(clean, best.mount_path)
    host = best.host_path if rest == "." else best.host_path / rest
    if must_exist and not host.exists():
        raise VolumeError(
            f"path {path} of component {component.name} is {host} on this machine (volume {best.volume}), "
            "which does not exist"
        )
    return host


def host_paths(component: ComponentVolumes, paths: Sequence[str]) -> list[Path]:
    """Container paths (a task's ``paths`` parameter) as directories here; any unmappable path is an error."""
    return [host_path(component, p) for p in paths]


# ------------------------------------------------------------------ fetching
_WORKLOADS: dict[str, type[Deployment] | type[StatefulSet] | type[DaemonSet]] = {
    "Deployment": Deployment,
    "StatefulSet": StatefulSet,
    "DaemonSet": DaemonSet,
}


async def _claim_path(client: AsyncClient, namespace: str, claim: str) -> Path:
    pvc = await get_or_none(client, PersistentVolumeClaim, claim, namespace)
    pv = None
    if pvc is not None and (pvc.get("spec") or {}).get("volumeName"):
        pv = await get_or_none(client, PersistentVolume, bound_volume(pvc))
    return claim_path(pvc, pv, namespace, claim)


async def resolve_target(
    client: AsyncClient, target: TargetRef, *, default_namespace: str = "default"
) -> list[ComponentVolumes]:
    """The components of ``target`` with their directories here.

    A missing target, or a standalone PVC that cannot be mapped, is an error right away; a workload's
    volumes that cannot be mapped are recorded and only fail when a path under them is backed up.
    """
    namespace = target.namespace or default_namespace
    kind = target.kind or ""
    where = f"{kind} {namespace}/{target.name}"
    group = target.api_group or ""
    if kind == "PersistentVolumeClaim" and group in ("", "core"):
        return [pvc_component(target.name, await _claim_path(client, namespace, target.name))]
    res = _WORKLOADS.get(kind)
    if res is None or group not in ("", "apps"):
        raise VolumeError(
            f"cannot back up {target.api_group or 'core'}/{where}: embedded mode supports apps/Deployment, "
            "apps/StatefulSet, apps/DaemonSet and PersistentVolumeClaim targets"
        )
    workload = await get_or_none(client, res, target.name, namespace)
    if workload is None:
        raise VolumeError(f"backup target {where} not found")
    # The claims are looked up at once; an API error is raised as looking them up in turn would meet it first.
    names = list(needed_claims(kind, workload))
    found = await asyncio.gather(*(_claim_path(client, namespace, c) for c in names), return_exceptions=True)
    claims: dict[str, Path | VolumeError] = {}
    for claim, result in zip(names, found, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, VolumeError):
            raise result
        claims[claim] = result
    return components(kind, workload, claims)


__all__ = [
    "COMPONENT_DUMP",
    "EMBEDDED_NODE",
    "POD_ORDINAL",
    "PVC_MOUNT_PATH",
    "PVC_NAME",
    "ComponentVolumes",
    "Mount",
    "TargetRef",
    "UnmappedMount",
    "VolumeError",
    "bound_volume",
    "claim_path",
    "components",
    "host_path",
    "host_paths",
    "needed_claims",
    "pv_host_path",
    "pvc_component",
    "resolve_target",
]
