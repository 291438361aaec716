"""Embedded mode's volume provisioner: a PersistentVolumeClaim nobody bound gets a directory of its own.

A cluster has a storage provisioner; ``kubestash up`` has none, so a claim created without ``volumeName``
(by a user, or by a restore from ``volumeClaimTemplates``) would stay Pending forever. This controller does
what a local-path provisioner does: a ``hostPath`` PersistentVolume on ``<root>/<namespace>/<claim>-<uid>``,
bound to the claim both ways (``claimRef`` with the claim's uid, ``spec.volumeName``, phase Bound). It runs
only in embedded mode (``kubestash up``), for claims whose storageClassName is unset or
:data:`STORAGE_CLASS`. Deleting the claim leaves the directory (and its PersistentVolume) in place: data is
never removed behind the user's back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import PersistentVolume, PersistentVolumeClaim
from lightkube.types import PatchType

from kubestash.runtime.controller import Result
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

STORAGE_CLASS = "kubestash-local"


@dataclass
class LocalVolumeProvisioner:
    client: AsyncClient
    claims: Informer
    root: Path

    async def __call__(self, key: Key) -> Result | None:
        claim = self.claims.get(*key)
        if claim is None or claim["metadata"].get("deletionTimestamp"):
            return None
        spec = claim.get("spec") or {}
        if spec.get("volumeName") or (spec.get("storageClassName") or STORAGE_CLASS) != STORAGE_CLASS:
            return None
        namespace, name = key
        uid = str(claim["metadata"].get("uid") or "")
        volume = f"pvc-{uid}" if uid else f"pvc-{namespace}-{name}"
        directory = self.root / namespace / f"{name}-{uid[:8]}"
        directory.mkdir(parents=True, exist_ok=True)
        requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage") or "1Gi"
        pv: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume, "annotations": {"pv.kubernetes.io/provisioned-by": "kubestash.com/local"}},
            "spec": {
                "capacity": {"storage": requested},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "hostPath": {"path": str(directory), "type": "DirectoryOrCreate"},
                "claimRef": {"kind": "PersistentVolumeClaim", "namespace": namespace, "name": name, "uid": uid},
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": spec.get("storageClassName") or "",
            },
        }
        try:
            await self.client.create(cast(PersistentVolume, PersistentVolume.from_dict(pv)))
        except ApiError as exc:
            if exc.status.code != 409:
                raise
        await self.client.patch(
            PersistentVolumeClaim,
            name,
            {"spec": {"volumeName": volume}},
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        await self.client.patch(
            PersistentVolumeClaim.Status,
            name,
            {
                "status": {
                    "phase": "Bound",
                    "accessModes": pv["spec"]["accessModes"],
                    "capacity": {"storage": requested},
                }
            },
            namespace=namespace,
            patch_type=PatchType.MERGE,
        )
        log.info("provisioned %s for PersistentVolumeClaim %s/%s at %s", volume, namespace, name, directory)
        return None
