"""The built-in Addon/Function catalog: the KubeStash catalog objects for the tasks this product can run.

The YAML files are KubeStash's own catalog manifests (``workload-addon``, ``pvc-addon`` and their Functions), kept
verbatim because their names, parameters and args are the compatibility contract: a BackupConfiguration written
for KubeStash names these tasks and parameters. Other KubeStash addons (kubedump, vault, KubeDB...) are not
installed, since nothing here could run them.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml
from lightkube import ApiError, AsyncClient

from kubestash.api.addons import Addon, Function
from kubestash.controllers.kinds import by_kind

CATALOG_FILES = (
    "workload-addon.yaml",
    "pvc-addon.yaml",
    "workload-backup-function.yaml",
    "workload-restore-function.yaml",
    "pvc-backup-function.yaml",
    "pvc-restore-function.yaml",
)


def builtin_catalog() -> list[Addon | Function]:
    """The catalog objects, parsed and validated (Addons first, then Functions)."""
    folder = resources.files("kubestash.tasks").joinpath("catalog")
    objects: list[Addon | Function] = []
    for name in CATALOG_FILES:
        data = yaml.safe_load(folder.joinpath(name).read_text(encoding="utf-8"))
        model = Addon if data.get("kind") == "Addon" else Function
        objects.append(model.model_validate(data))
    return objects


async def install_catalog(client: AsyncClient, field_manager: str = "kubestash-operator") -> list[str]:
    """Server-side apply the catalog objects (cluster-scoped) that are missing or differ; returns the names written.

    An object whose stored spec already equals the catalog's is not written at all, so re-installing at every
    operator start changes nothing: no new resourceVersion, no watch event. ``force`` takes fields over from
    whoever edited them, so after an install the catalog always matches this release.
    """
    written: list[str] = []
    for obj in builtin_catalog():
        kind = by_kind(obj.kind)
        desired = obj.to_wire()
        try:
            live: Any = await client.get(kind, obj.name)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
        else:
            if live.to_dict().get("spec") == desired["spec"]:
                continue
        resource = kind.from_dict(desired)  # type: ignore[attr-defined]
        await client.apply(resource, field_manager=field_manager, force=True)
        written.append(obj.name)
    return written


__all__ = ["CATALOG_FILES", "builtin_catalog", "install_catalog"]
