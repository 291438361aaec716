"""The objects a backup can target, as lightkube resources: workloads and PersistentVolumeClaims."""

from __future__ import annotations

from typing import Any

from lightkube import AsyncClient
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.core_v1 import PersistentVolumeClaim

from kubestash.api.shared import TypedObjectReference
from kubestash.controllers.common import get_or_none

TARGET_KINDS: dict[tuple[str, str], Any] = {
    ("apps", "Deployment"): Deployment,
    ("apps", "StatefulSet"): StatefulSet,
    ("apps", "DaemonSet"): DaemonSet,
    ("", "PersistentVolumeClaim"): PersistentVolumeClaim,
}


def target_resource(target: TypedObjectReference) -> Any | None:
    return TARGET_KINDS.get((target.api_group or "", target.kind or ""))


async def target_exists(client: AsyncClient, target: TypedObjectReference, namespace: str) -> bool:
    """Whether the target exists; a kind this product cannot back up yet counts as not found."""
    resource = target_resource(target)
    if resource is None:
        return False
    return await get_or_none(client, resource, target.name, target.namespace or namespace) is not None
