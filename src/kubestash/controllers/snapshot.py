"""Snapshot: aggregate component results, upload the Snapshot's metadata, summarise its Repository, clean up.

When every component is final (reference §2.10, §3.6 step 6): ``size`` (sum of the components), ``integrity``
(AND of theirs), ``snapshotTime``, the Snapshot's YAML uploaded to ``<repo path>/snapshots/<name>.yaml``
(``SnapshotMetadataUploaded`` -- what lets a re-created BackupStorage bring it back), and the Repository's
backup summary recomputed from its Snapshots (``RecentSnapshotListUpdated``). The phase comes from
:func:`~kubestash.api.phases.snapshot_phase`.

Repository summary (decided here; the reference names the fields, not their rules): ``snapshotCount`` counts
Succeeded Snapshots; ``lastBackupTime``, ``size`` and ``integrity`` are those of the newest Succeeded one (a
component's size is its whole restic repository, so the newest Snapshot's size is the repository's);
``recentSnapshots`` are the five newest of any phase; ``componentPaths`` every component path seen.

A Snapshot that ends Failed gets the stale locks of its failed components' repositories removed (a task
killed with SIGKILL, or by its deadline, cannot remove its own lock; restic's ``check`` and ``prune`` would
refuse the repository until someone ran ``unlock``). Only stale locks: a live process's lock stays.

Deleting a Snapshot with ``deletionPolicy: WipeOut`` (retention sets it) forgets its restic snapshots in each
component repository and prunes, then removes its metadata file; ``Delete`` removes only the object.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError, AsyncClient

from kubestash.api import conditions as cond
from kubestash.api.conditions import rfc3339
from kubestash.api.phases import snapshot_components_phase, snapshot_integrity, snapshot_phase
from kubestash.api.sizes import human_size, parse_size
from kubestash.api.storage import Repository, Snapshot
from kubestash.backends.base import BackendError
from kubestash.controllers.backupconfiguration import utcnow
from kubestash.controllers.backupstorage import SecretMissing, repository_secrets
from kubestash.controllers.common import (
    FINALIZER,
    ensure_finalizer,
    has_condition,
    patch_status,
    release_finalizer,
    set_condition,
)
from kubestash.controllers.repository import NotReadyYet, RepositoryReconciler
from kubestash.engine.base import Engine, EngineError, RepositoryTarget
from kubestash.engine.location import repository_target
from kubestash.runtime.controller import Result
from kubestash.runtime.informer import Informer, Key

log = logging.getLogger(__name__)

SNAPSHOTS_DIR = "snapshots"
RECENT = 5


@dataclass
class SnapshotReconciler:
    client: AsyncClient
    snapshots: Informer
    repositories: Informer
    repository_reconciler: RepositoryReconciler
    engine: Engine
    clock: Callable[[], datetime] = utcnow
    retry_interval: float = 10.0

    async def __call__(self, key: Key) -> Result | None:
        data = self.snapshots.get(*key)
        if data is None:
            return None
        snap = Snapshot.model_validate(data)
        namespace, name = key
        if snap.metadata.deletion_timestamp:
            await self._finalize(snap, data)
            return None
        await ensure_finalizer(self.client, "Snapshot", data)
        if (data.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return None  # finished (or re-synced from a backend): its status is history, not to be recomputed
        if not (data.get("status") or {}).get("components"):
            return None  # nothing reported yet; whoever creates it fills in the components
        status: dict[str, Any] = copy.deepcopy(data.get("status") or {})
        conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
        status["conditions"] = conditions
        retry = False
        components_phase = snapshot_components_phase(snap)
        if components_phase in ("Succeeded", "Failed") and not has_condition(
            conditions, cond.SNAPSHOT_METADATA_UPLOADED, "True"
        ):
            components = status.get("components") or {}
            status["size"] = human_size(sum(parse_size(c.get("size")) for c in components.values()))
            integrity = snapshot_integrity(snap)
            if integrity is not None:
                status["integrity"] = integrity
            status.setdefault("snapshotTime", rfc3339(self.clock()))
            status["phase"] = components_phase
            repo = self._repository(snap)
            current = {**data, "status": status}

            async def upload() -> NotReadyYet | BackendError | None:
                try:
                    if repo is None:
                        raise NotReadyYet(f"Repository {snap.spec.repository} not found")
                    await self._upload(repo, current)
                except (NotReadyYet, BackendError) as exc:
                    return exc
                return None

            async def summarise() -> None:
                if repo is not None:
                    await self._summarise(repo, current)

            async def unlock() -> None:
                if repo is not None and components_phase == "Failed":
                    await self._unlock_failed(snap, repo)

            # The metadata in the backend, the Repository's summary and stale locks are independent: at once.
            failure, _, _ = await asyncio.gather(upload(), summarise(), unlock())
            if failure is None:
                set_condition(
                    conditions,
                    cond.SNAPSHOT_METADATA_UPLOADED,
                    "True",
                    cond.REASON_SNAPSHOT_METADATA_UPLOADED,
                    "Snapshot metadata uploaded to the backend",
                )
            else:
                retry = True
                message = f"{failure.reason}: {failure.message}" if isinstance(failure, BackendError) else str(failure)
                set_condition(
                    conditions,
                    cond.SNAPSHOT_METADATA_UPLOADED,
                    "False",
                    cond.REASON_SNAPSHOT_METADATA_UPLOAD_FAILED,
                    message,
                )
            if repo is not None:
                set_condition(
                    conditions,
                    cond.RECENT_SNAPSHOT_LIST_UPDATED,
                    "True",
                    cond.REASON_RECENT_SNAPSHOT_LIST_UPDATED,
                    "Repository status updated",
                )
        status["phase"] = snapshot_phase(Snapshot.model_validate({**data, "status": status}))
        if status != (data.get("status") or {}):
            status["lastUpdateTime"] = rfc3339(self.clock())
            await patch_status(self.client, "Snapshot", name, namespace, status)
        return Result(requeue_after=self.retry_interval) if retry else None

    def _repository(self, snap: Snapshot) -> Repository | None:
        data = self.repositories.get(snap.namespace, snap.spec.repository or "")
        return Repository.model_validate(data) if data else None

    async def _upload(self, repo: Repository, snapshot: dict[str, Any]) -> None:
        meta = snapshot["metadata"]
        manifest = {
            "apiVersion": snapshot["apiVersion"],
            "kind": "Snapshot",
            "metadata": {k: meta[k] for k in ("name", "namespace", "labels") if meta.get(k)},
            "spec": snapshot["spec"],
            "status": snapshot["status"],
        }
        path = f"{(repo.spec.path or '').strip('/')}/{SNAPSHOTS_DIR}/{meta['name']}.yaml"
        with closing(await self.repository_reconciler.backend_for(repo)) as backend:
            await backend.put(path, yaml.safe_dump(manifest, sort_keys=False).encode())

    async def _summarise(self, repo: Repository, current: dict[str, Any]) -> None:
        snaps = {
            s["metadata"]["name"]: s
            for s in self.snapshots.list(repo.namespace)
            if (s.get("spec") or {}).get("repository") == repo.name and not s["metadata"].get("deletionTimestamp")
        }
        snaps[current["metadata"]["name"]] = current
        await patch_status(
            self.client, "Repository", repo.name, repo.namespace, repository_summary(list(snaps.values()))
        )

    async def _finalize(self, snap: Snapshot, data: dict[str, Any]) -> None:
        if FINALIZER not in (snap.metadata.finalizers or []):
            return
        repo = self._repository(snap)
        if repo is not None and snap.spec.deletion_policy == "WipeOut":
            try:
                await self._wipe(snap, repo)
            except (NotReadyYet, BackendError, EngineError) as exc:
                log.warning("Snapshot %s/%s: data not removed yet: %s", snap.namespace, snap.name, exc)
                raise
        await release_finalizer(self.client, "Snapshot", data)
        if repo is not None:
            rest = [
                s
                for s in self.snapshots.list(repo.namespace)
                if (s.get("spec") or {}).get("repository") == repo.name and s["metadata"]["name"] != snap.name
            ]
            try:
                await patch_status(self.client, "Repository", repo.name, repo.namespace, repository_summary(rest))
            except ApiError as exc:
                if exc.status.code != 404:
                    raise

    async def _wipe(self, snap: Snapshot, repo: Repository) -> None:
        """Forget and prune this Snapshot's restic snapshots in each component repository; drop its metadata."""
        for component in ((snap.status.components if snap.status else None) or {}).values():
            ids = [s.summary.id for s in component.restic_stats or [] if s.summary and s.summary.id]
            if ids and component.path:
                await self._in_component(repo, component.path, partial(self.engine.forget, snapshot_ids=ids))
        with closing(await self.repository_reconciler.backend_for(repo)) as backend:
            await backend.delete(f"{(repo.spec.path or '').strip('/')}/{SNAPSHOTS_DIR}/{snap.name}.yaml")

    async def _unlock_failed(self, snap: Snapshot, repo: Repository) -> None:
        """Remove stale locks from the repositories of the failed components (best effort: logged, not raised)."""
        for name, component in ((snap.status.components if snap.status else None) or {}).items():
            if component.phase != "Failed" or not component.path:
                continue
            try:
                await self._in_component(repo, component.path, self.engine.unlock)
            except (NotReadyYet, EngineError) as exc:
                log.info("Snapshot %s/%s: stale locks of %s not removed: %s", snap.namespace, snap.name, name, exc)

    async def _in_component(
        self, repo: Repository, path: str, op: Callable[[RepositoryTarget], Awaitable[object]]
    ) -> None:
        """Run ``op`` on the component repository at ``path`` of ``repo``, with its storage's credentials."""
        storage = self.repository_reconciler.storage_of(repo)
        try:
            storage_secret, encryption = await repository_secrets(self.client, storage, repo)
        except SecretMissing as exc:
            raise NotReadyYet(f"cannot open the component repository: {exc}") from None
        with tempfile.TemporaryDirectory(prefix="kubestash-snapshot-") as scratch:
            target = repository_target(
                storage.spec.storage,
                storage_secret,
                encryption,
                f"{(repo.spec.path or '').strip('/')}/{path}",
                scratch_dir=Path(scratch),
                enable_cache=False,
            )
            await op(target)


def repository_summary(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The backup fields of a Repository's status, from its Snapshots (see the module docstring)."""

    def when(s: dict[str, Any]) -> str:
        return str((s.get("status") or {}).get("snapshotTime") or s["metadata"].get("creationTimestamp") or "")

    ordered = sorted(snapshots, key=lambda s: (when(s), s["metadata"]["name"]), reverse=True)
    succeeded = [s for s in ordered if (s.get("status") or {}).get("phase") == "Succeeded"]
    latest = (succeeded[0].get("status") or {}) if succeeded else {}
    paths = sorted(
        {
            c.get("path")
            for s in ordered
            for c in ((s.get("status") or {}).get("components") or {}).values()
            if c.get("path")
        }
    )
    summary: dict[str, Any] = {
        "snapshotCount": len(succeeded),
        "lastBackupTime": latest.get("snapshotTime"),
        "size": latest.get("size"),
        "integrity": latest.get("integrity"),
        "recentSnapshots": [
            {
                "name": s["metadata"]["name"],
                "phase": (s.get("status") or {}).get("phase"),
                "session": (s.get("spec") or {}).get("session"),
                "size": (s.get("status") or {}).get("size"),
                "snapshotTime": (s.get("status") or {}).get("snapshotTime"),
            }
            for s in ordered[:RECENT]
        ],
        "componentPaths": paths,
    }
    return summary
